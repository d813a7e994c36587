"""TorchHub entry points, named as Robust Video Matting's own ``hubconf.py`` names them.

    model = torch.hub.load("/path/to/nvpipe", "mobilenetv3", source="local")
    convert_video = torch.hub.load("/path/to/nvpipe", "converter", source="local")

Weights come through nvpipe's chain (``weights=``, ``$NVPIPE_WEIGHTS``, the cache, then the
official file fetched once and checked by its sha256), not ``torch.hub``'s download cache.
The network is ``rvm.MattingNetwork`` in eval mode with BatchNorm folded into the convs
(inference only): ``model(src, *rec, downsample_ratio)`` and ``model.cuda()`` work as with
RVM's; fine-tuning needs RVM's own training code.
"""

dependencies = ["torch", "numpy", "av", "onnx"]


def _network(variant: str, pretrained: bool, weights):
    import rvm

    if not pretrained:
        return rvm.MattingNetwork(variant).eval()
    return rvm.load(weights, variant=variant)


def mobilenetv3(pretrained: bool = True, progress: bool = True, weights=None):
    """RVM with the MobileNetV3 encoder; ``weights``: a .pth or .onnx file (default: the
    official ONNX weights via nvpipe's chain). ``progress`` is accepted for RVM's signature
    (nvpipe prints one line on stderr when it downloads)."""
    return _network("mobilenetv3", pretrained, weights)


def resnet50(pretrained: bool = True, progress: bool = True, weights=None):
    """RVM with the ResNet50 encoder. There is no downloadable default: pass
    ``weights="rvm_resnet50.pth"`` (RVM's release) or set ``$NVPIPE_WEIGHTS``."""
    import os

    import rvm

    if pretrained and weights is None and not os.environ.get(rvm.weights.ENV_WEIGHTS):
        raise rvm.WeightsError(
            "resnet50 has no downloadable default weights: pass weights='rvm_resnet50.pth' "
            "(from RVM's v1.0.0 release) or set NVPIPE_WEIGHTS, or use pretrained=False")
    return _network("resnet50", pretrained, weights)


def converter():
    """``nvpipe.convert_video``: RVM's converter's arguments, nvpipe's pipeline."""
    from nvpipe import convert_video

    return convert_video
