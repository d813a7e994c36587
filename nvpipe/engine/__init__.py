"""The pipeline engine: one frame's path from a decoded frame to the sinks.

`runner` (the pipeline and its threads), `convert` (kernel 1), `matting` (the network
stage), `compose` (kernels 2+3), `transfer` (how frames cross threads: host or CUDA),
`pacing` (queue depths, live mailboxes, latency), `cuts` (scene cuts), `buffers`.
"""
