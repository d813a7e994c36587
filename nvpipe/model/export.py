"""``nvpipe export``: the network as ONNX or TorchScript, in the official files' interface.

ONNX (``export_onnx``): inputs ``src [B, 3, H, W]``, ``r1i..r4i`` (any broadcastable shape;
zeros ``[1, 1, 1, 1]`` on the first frame), ``downsample_ratio`` (float32 ``[1]``); outputs
``fgr``, ``pha``, ``r1o..r4o``. Batch, height, width and the ratio are dynamic, as in the
official ``rvm_mobilenetv3_fp32.onnx``: the ratio feeds a ``Resize`` by scales (not by a
size), so the low-resolution input is sampled exactly as ``F.interpolate(scale_factor=r)``
samples it, and the refiner always runs (the official export's behaviour, also at ratio 1).
FP16 exports take and return float16 tensors; ``downsample_ratio`` stays float32.

TorchScript (``export_torchscript``): ``torch.jit.script`` of ``rvm.MattingNetwork``, saved
unfrozen like the official ``.torchscript`` files, so ``torch.jit.freeze`` can follow on the
user's device. ``forward(src, r1, r2, r3, r4, downsample_ratio, segmentation_pass)`` is the
official one; ``coefficients`` is exported too (nvpipe's pipeline uses it when it is kept).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from nvpipe.errors import NvpipeError

FORMATS = ("onnx", "torchscript")
DTYPES = {"float32": torch.float32, "float16": torch.float16}
DEFAULT_OPSET = 17
MIN_OPSET = 11  # Resize with scales as an input
INPUT_NAMES = ["src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"]
OUTPUT_NAMES = ["fgr", "pha", "r1o", "r2o", "r3o", "r4o"]


class _ResizeByRatio(torch.autograd.Function):
    """Bilinear resize by a ratio held in a tensor: an ONNX ``Resize`` with scales
    ``[1, 1, r, r]`` (``pytorch_half_pixel``, like the official export), so the ratio stays
    an input of the graph instead of a constant traced into it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=float(ratio), mode="bilinear",
                             align_corners=False, recompute_scale_factor=False)

    @staticmethod
    def symbolic(g, x, ratio):
        roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        ones = g.op("Constant", value_t=torch.tensor([1.0, 1.0], dtype=torch.float32))
        scales = g.op("Concat", ones, ratio, ratio, axis_i=0)
        return g.op("Resize", x, roi, scales, coordinate_transformation_mode_s="pytorch_half_pixel",
                    cubic_coeff_a_f=-0.75, mode_s="linear", nearest_mode_s="floor")


class OnnxGraph(nn.Module):
    """The official ONNX interface over ``rvm.MattingNetwork``: ratio as a tensor, refiner on.

    The tail is written out of place (``rvm.refine`` works in place, which tracing into ONNX
    does not keep reliably); it computes the same ``fgr``/``pha``.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, src, r1, r2, r3, r4, downsample_ratio):
        src_sm = _ResizeByRatio.apply(src, downsample_ratio)
        coeff_a, coeff_b, r1, r2, r3, r4 = self.network.coefficients(src_sm, r1, r2, r3, r4, True)
        size = (src.shape[2], src.shape[3])
        coeff_a = F.interpolate(coeff_a, size=size, mode="bilinear", align_corners=False)
        coeff_b = F.interpolate(coeff_b, size=size, mode="bilinear", align_corners=False)
        out = coeff_a * torch.cat([src, src.mean(dim=1, keepdim=True)], dim=1) + coeff_b
        fgr_residual, pha = out.split([3, 1], dim=1)
        return (fgr_residual + src).clamp(0, 1), pha.clamp(0, 1), r1, r2, r3, r4


def _network(variant: str, weights: Optional[str], dtype: torch.dtype):
    import rvm

    try:
        network = rvm.load(weights, variant=variant, device="cpu", dtype=torch.float32)
    except rvm.WeightsError as error:
        raise NvpipeError(str(error)) from None
    return network.to(dtype).eval()


def _check_output(out: os.PathLike | str, overwrite: bool) -> Path:
    path = Path(out)
    if path.is_dir():
        raise NvpipeError(f"{path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise NvpipeError(f"{path} exists (pass --overwrite to replace it)")
    if not path.parent.is_dir():
        raise NvpipeError(f"directory {path.parent} does not exist")
    # Before the export (seconds of tracing): a folder that cannot be written fails now,
    # in one line, as `nvpipe run` words it.
    probe = path.with_name(f".{path.name}.part")
    try:
        probe.open("wb").close()
        probe.unlink()
    except OSError as error:
        raise NvpipeError(f"cannot write to {path.parent} ({_os_reason(error)})") from None
    return path


def _os_reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _writing(path: Path):
    """Turns an OSError while writing ``path`` (a disk that fills) into one line."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except OSError as error:
            raise NvpipeError(f"writing {path} failed ({_os_reason(error)}); nothing was "
                              f"written") from None

    return guard()


def export_onnx(out, *, variant: str = "mobilenetv3", weights: Optional[str] = None,
                dtype: str = "float32", opset: int = DEFAULT_OPSET, overwrite: bool = False) -> Path:
    """Write the network as ONNX (see the module docstring for the interface). Returns the path."""
    if not MIN_OPSET <= opset <= 20:
        raise NvpipeError(f"opset must be in {MIN_OPSET}..20, got {opset}")
    path = _check_output(out, overwrite)
    torch_dtype = DTYPES[dtype]
    graph = OnnxGraph(_network(variant, weights, torch_dtype)).eval()
    # Traced at 256x256, ratio 0.25, first-frame states [1,1,1,1]: every size stays symbolic.
    src = torch.rand(1, 3, 256, 256, dtype=torch_dtype)
    states = (torch.zeros(1, 1, 1, 1, dtype=torch_dtype),) * 4
    ratio = torch.tensor([0.25], dtype=torch.float32)
    spatial = {0: "batch_size", 2: "height", 3: "width"}
    everything = {0: "batch_size", 1: "channels", 2: "height", 3: "width"}
    dynamic_axes = {"src": spatial, "fgr": spatial, "pha": spatial}
    dynamic_axes.update({f"r{i}i": everything for i in range(1, 5)})
    dynamic_axes.update({f"r{i}o": spatial for i in range(1, 5)})
    temp = path.with_name(f".{path.name}.part")
    try:
        with _writing(path), warnings.catch_warnings(), torch.no_grad():
            # The TorchScript-based exporter (dynamo=False): it keeps the custom Resize and
            # needs no onnxscript; torch marks it deprecated, hence the filter.
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (src, *states, ratio), str(temp), dynamo=False,
                              opset_version=opset, do_constant_folding=True,
                              input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                              dynamic_axes=dynamic_axes)
            _name_output_channels(temp, variant)
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def _name_output_channels(path: Path, variant: str) -> None:
    """The outputs' channel counts as numbers, as in the official file (the tracer leaves
    them symbolic because the state inputs' channels are dynamic)."""
    import onnx
    import rvm

    model = onnx.load(str(path))
    channels = dict(zip(OUTPUT_NAMES, (3, 1, *rvm.STATE_CHANNELS[variant])))
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[1].dim_value = channels[output.name]
    onnx.save(model, str(path))


def export_torchscript(out, *, variant: str = "mobilenetv3", weights: Optional[str] = None,
                       dtype: str = "float32", overwrite: bool = False) -> Path:
    """Write ``torch.jit.script(rvm.MattingNetwork)`` with the weights (unfrozen). Returns the path."""
    path = _check_output(out, overwrite)
    scripted = torch.jit.script(_network(variant, weights, DTYPES[dtype]))
    temp = path.with_name(f".{path.name}.part")
    try:
        with _writing(path):
            scripted.save(str(temp))
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def export(out, *, format: str, **options) -> Path:
    """``export_onnx`` or ``export_torchscript`` by ``format`` ("onnx", "torchscript")."""
    if format == "onnx":
        return export_onnx(out, **options)
    if format == "torchscript":
        options.pop("opset", None)
        return export_torchscript(out, **options)
    raise NvpipeError(f"format must be one of {FORMATS}, got {format!r}")


# -- nvpipe's own low-resolution graph (the CPU path's ONNX Runtime engine) -------------------
COEFFICIENT_INPUTS = ["src_sm", "r1i", "r2i", "r3i", "r4i"]
COEFFICIENT_OUTPUTS = ["coeff_a", "coeff_b", "r1o", "r2o", "r3o", "r4o"]


class CoefficientsGraph(nn.Module):
    """``network.coefficients`` as a graph: ``src_sm [1, 3, h, w]`` and full-shape states
    ``r1i..r4i`` (zeros on a clip's first frame) -> ``coeff_a``, ``coeff_b`` ``[1, 4, h, w]``
    and ``r1o..r4o``: the low-resolution network only, no full-size refiner step."""

    def __init__(self, network: nn.Module, use_refiner: bool = True):
        super().__init__()
        self.network = network
        self.use_refiner = use_refiner

    def forward(self, src_sm, r1, r2, r3, r4):
        return self.network.coefficients(src_sm, r1, r2, r3, r4, self.use_refiner)


def export_coefficients_onnx(network: nn.Module, out, *, use_refiner: bool = True,
                             opset: int = DEFAULT_OPSET, split_concats: bool = True) -> Path:
    """Write ``CoefficientsGraph(network)`` (float32, NCHW) as ONNX at ``out`` (replaced
    atomically). Height and width are dynamic; traced at 144x256. ``split_concats``: the
    convolutions of concatenations split (``nvpipe.model.graph_rewrite``: OpenVINO runs
    the file ~6% faster). Returns the path."""
    import copy
    import math

    import rvm

    path = Path(out)
    variant = getattr(network, "variant", "mobilenetv3")
    network = copy.deepcopy(network).to(device="cpu", dtype=torch.float32).eval()
    if getattr(network, "channels_last", False):  # ORT picks its own layout
        network.to(memory_format=torch.contiguous_format)
        network.channels_last = False
    height, width = 144, 256
    states = []
    for channels in rvm.STATE_CHANNELS[variant]:
        height, width = math.ceil(height / 2), math.ceil(width / 2)
        states.append(torch.zeros(1, channels, height, width))
    # Each state's sizes get their own names (r1 is half the input's, r2 a quarter...):
    # one shared name would tell runtimes they are equal, and ORT's memory planner trusts it.
    axes = {name: {2: "height", 3: "width"} for name in ("src_sm", "coeff_a", "coeff_b")}
    for k in range(1, 5):
        for name in (f"r{k}i", f"r{k}o"):
            axes[name] = {2: f"height_{2 ** k}", 3: f"width_{2 ** k}"}
    temp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
            torch.onnx.export(CoefficientsGraph(network, use_refiner).eval(),
                              (torch.rand(1, 3, 144, 256), *states), str(temp), dynamo=False,
                              opset_version=opset, do_constant_folding=True,
                              input_names=COEFFICIENT_INPUTS, output_names=COEFFICIENT_OUTPUTS,
                              dynamic_axes=axes)
        if split_concats:
            import onnx

            from nvpipe.model.graph_rewrite import split_concatenated_convolutions

            onnx.save(split_concatenated_convolutions(onnx.load(str(temp)))[0], str(temp))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path
