"""Networks that are not an ``rvm.MattingNetwork``, in the interface the matting stage calls.

``as_network(model, device, dtype)`` (used by ``convert_video``) turns what RVM's converter
accepts into something with ``coefficients(src_sm, r1, r2, r3, r4, ...)``:

- an ``rvm.MattingNetwork``: itself, moved;
- any module or unfrozen TorchScript module holding RVM's state_dict (RVM's own
  ``MattingNetwork``, RVM's ``.torchscript`` files, ``nvpipe export --format torchscript``):
  its weights in an ``rvm.MattingNetwork``, the pipeline's fast path (CUDA graphs too);
- a frozen TorchScript module (no parameters left to copy) that kept ``coefficients``
  (``torch.jit.freeze(m, preserved_attrs=["coefficients"])`` of nvpipe's export):
  ``ScriptedCoefficients``;
- any other frozen TorchScript module with RVM's ``forward`` (RVM's file, frozen):
  ``ForwardMatting``, which runs that forward on the full-size frames. It sets
  ``needs_source = True``: the matting stage must hand it the full-size frames too
  (``coefficients(..., downsample_ratio=r, src=src)``), and it returns full-size
  coefficients (``coeff_a = 0``, ``coeff_b = [fgr - src, pha]``), which the tail maps back
  to ``fgr``, ``pha`` unchanged (bilinear at scale 1 is the identity).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from nvpipe.errors import NvpipeError


class ScriptedCoefficients(nn.Module):
    """A TorchScript module's ``coefficients`` behind a Python signature (the matting stage
    passes ``use_refiner`` by keyword and inspects the signature)."""

    needs_source = False

    def __init__(self, module: torch.jit.ScriptModule, variant: str = "mobilenetv3"):
        super().__init__()
        self.module = module
        self.variant = variant

    def coefficients(self, src_sm: torch.Tensor, r1: Optional[torch.Tensor] = None,
                     r2: Optional[torch.Tensor] = None, r3: Optional[torch.Tensor] = None,
                     r4: Optional[torch.Tensor] = None, use_refiner: bool = True):
        return tuple(self.module.coefficients(src_sm, r1, r2, r3, r4, use_refiner))


class ForwardMatting(nn.Module):
    """A module with RVM's ``forward(src, r1, r2, r3, r4, downsample_ratio) -> [fgr, pha,
    r1..r4]`` as full-size coefficients (see the module docstring). Runs eagerly: no CUDA
    graphs (the full-size input would have to be captured too)."""

    needs_source = True

    def __init__(self, module: nn.Module, variant: str = "mobilenetv3"):
        super().__init__()
        self.module = module
        self.variant = variant

    def coefficients(self, src_sm: torch.Tensor, r1: Optional[torch.Tensor] = None,
                     r2: Optional[torch.Tensor] = None, r3: Optional[torch.Tensor] = None,
                     r4: Optional[torch.Tensor] = None, downsample_ratio: Optional[float] = None,
                     src: Optional[torch.Tensor] = None):
        if src is None or downsample_ratio is None:
            raise ValueError("ForwardMatting runs the module on the full-size frames: pass "
                             "src= and downsample_ratio= (needs_source is True)")
        fgr, pha, *states = self.module(src, r1, r2, r3, r4, float(downsample_ratio))
        coeff_b = torch.cat([fgr - src, pha], dim=-3)
        return (torch.zeros_like(coeff_b), coeff_b, *states)


def _variant_of(state: dict) -> str:
    return "resnet50" if any(key.startswith("backbone.layer1") for key in state) else "mobilenetv3"


def _from_state_dict(state: dict, device, dtype):
    """An ``rvm.MattingNetwork`` from RVM's state_dict, BatchNorm layers or folded; None
    when ``state`` is not one (the error names what did not fit)."""
    import rvm

    variant = _variant_of(state)
    folded = not any(key.endswith("running_mean") for key in state)
    network = rvm.MattingNetwork(variant, folded=folded)
    # TorchScript's state_dict also lists non-persistent buffers (the encoder's mean/std).
    transient = {name for name, _ in network.named_buffers()} - set(network.state_dict())
    state = {key: value for key, value in state.items() if key not in transient}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1:2]
        raise NvpipeError(f"the model's state_dict is not RVM's {variant} "
                          f"({first[0].strip() if first else error})") from None
    head = state.get("project_seg.conv.weight")
    network.has_segmentation_head = bool(head is not None and head.any())
    if not folded:
        rvm.fuse(network.eval())
    return network.to(device=device, dtype=dtype).eval()


def as_network(model, device, dtype: torch.dtype):
    """See the module docstring. ``NvpipeError`` for anything else."""
    import rvm

    if model is None or isinstance(model, str):
        try:
            return rvm.load(None, variant=model or "mobilenetv3", device=device, dtype=dtype)
        except rvm.WeightsError as error:
            raise NvpipeError(str(error)) from None
    if isinstance(model, rvm.MattingNetwork):
        return model.to(device=device, dtype=dtype).eval()
    if isinstance(model, torch.jit.ScriptModule):
        state = model.state_dict()
        if state:
            return _from_state_dict(state, device, dtype)
        variant = "mobilenetv3"
        if hasattr(model, "coefficients"):
            return ScriptedCoefficients(model, variant)
        return ForwardMatting(model, variant)
    if isinstance(model, nn.Module):
        return _from_state_dict(model.state_dict(), device, dtype)
    raise NvpipeError(f"model must be an RVM network (a module, a TorchScript module), a "
                      f"variant name or None, got {type(model).__name__}")


def device_and_dtype(model, device, dtype):
    """RVM's converter's rule: ``device``/``dtype`` default to the model's first parameter's;
    a frozen TorchScript module has none, so both must be given."""
    if (device is None or dtype is None) and isinstance(model, nn.Module):
        parameter = next(iter(model.parameters()), None)
        if parameter is None:
            raise NvpipeError("this model has no parameters to take the device and dtype "
                              "from (a frozen TorchScript module?): pass device= and dtype=, "
                              "as RVM's converter requires")
        device = parameter.device if device is None else device
        dtype = parameter.dtype if dtype is None else dtype
    return device, dtype
