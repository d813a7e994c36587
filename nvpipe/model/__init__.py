"""The network as nvpipe uses it: `adapters` (what `convert_video` accepts as a model) and
`export` (TorchScript and ONNX exports). The network itself is the stand-alone `rvm` package."""
