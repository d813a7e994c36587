"""``EagerMatting``: the network called directly. The CPU path, CUDA without graphs, and
the fallback for a shape whose graph capture fails."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from nvpipe.engine.matting._common import (as_coefficients, check_chunk_shape, coefficient_kwargs,
                                           default_coefficient_format, prepare_network,
                                           recurrent_state_shapes)


class EagerMatting:
    """The network called directly, keeping its recurrent state; same interface as the graph.

    Args:
        network: an RVM network with ``coefficients(src_sm, r1, r2, r3, r4, **kw)``; moved in
            place to ``device``/``dtype`` (and channels_last on CUDA).
        src_sm_shape: ``(3, h, w)`` or ``(T, 3, h, w)``, or None to accept any shape; the
            spatial size must stay the same between ``reset()``s (the state has that size).
        device, dtype: where and in what precision the network runs.
        downsample_ratio: the job's ratio (1 means no refiner), or None for the network default.
        coefficient_format: the outputs' memory format (default: ``default_coefficient_format``).

    ``__call__(src_sm)``: ``src_sm`` ``[3, h, w]`` or ``[T, 3, h, w]``, RGB in [0, 1], any
    float dtype, on ``device``. Returns ``(coeff_a, coeff_b)``, each ``[4, h, w]`` or
    ``[T, 4, h, w]`` in ``dtype``, channels (R, G, B, alpha), for ``matting_tail``. Work runs
    on the caller's current stream.
    """

    def __init__(self, network: torch.nn.Module, src_sm_shape: Optional[Sequence[int]] = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 downsample_ratio: Optional[float] = None, variant: Optional[str] = None,
                 coefficient_format: Optional[torch.memory_format] = None):
        self.device = torch.device(device)
        self.dtype = dtype
        self.shape = check_chunk_shape(src_sm_shape) if src_sm_shape is not None else None
        self.network = prepare_network(network, self.device, dtype)
        self.variant = variant or getattr(network, "variant", "mobilenetv3")
        self.coefficient_format = coefficient_format or default_coefficient_format(self.device)
        self._kwargs = coefficient_kwargs(network, downsample_ratio)
        self._states: Optional[list[torch.Tensor]] = None
        self._fresh = True  # no frame since construction or reset(): the size may change
        if self.shape is not None:
            self._allocate_states(self.shape[-2], self.shape[-1])

    @torch.inference_mode()
    def _allocate_states(self, height: int, width: int) -> None:
        self._states = [torch.zeros(shape, device=self.device, dtype=self.dtype)
                        for shape in recurrent_state_shapes(height, width, self.variant)]

    @torch.inference_mode()
    def __call__(self, src_sm: torch.Tensor, src=None) -> tuple[torch.Tensor, torch.Tensor]:
        check_chunk_shape(src_sm.shape)
        if self.shape is not None and tuple(src_sm.shape[-3:]) != self.shape[-3:]:
            raise ValueError(f"expected frames of {self.shape[-3:]}, got {tuple(src_sm.shape) = }")
        expected = recurrent_state_shapes(src_sm.shape[-2], src_sm.shape[-1], self.variant)
        if self._states is None or (self._fresh and tuple(self._states[0].shape) != expected[0]):
            self._allocate_states(src_sm.shape[-2], src_sm.shape[-1])
        elif tuple(self._states[0].shape) != expected[0]:
            raise ValueError(f"frame size changed to {tuple(src_sm.shape[-2:])} without reset()")
        self._fresh = False
        x = src_sm.to(device=self.device, dtype=self.dtype)[None]  # a chunk: GRUs step over T
        coeff_a, coeff_b, *states = self.network.coefficients(x, *self._states, **self._kwargs)
        for old, new in zip(self._states, states):
            if old.shape != new.shape:
                raise RuntimeError(f"network returned a state of {tuple(new.shape)}, "
                                   f"expected {tuple(old.shape)}")
        self._states = list(states)
        return (as_coefficients(coeff_a, self.coefficient_format),
                as_coefficients(coeff_b, self.coefficient_format))

    def state(self) -> tuple[torch.Tensor, ...]:
        """The current r1..r4 (``[1, C, h_k, w_k]``), or an empty tuple before the first call."""
        return tuple(self._states) if self._states is not None else ()

    @torch.inference_mode()
    def load_state(self, states: Sequence[torch.Tensor]) -> None:
        """Continue from ``states`` (another instance's ``state()``, same frame size)."""
        if len(states) == 0:
            return self.reset()
        self._states = [s.to(device=self.device, dtype=self.dtype).clone() for s in states]
        self._fresh = False

    @torch.inference_mode()
    def reset(self) -> None:
        """Forget the recurrent state (the next frame is treated as a clip's first)."""
        if self._states is not None:
            for s in self._states:
                s.zero_()
        self._fresh = True
