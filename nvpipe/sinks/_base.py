"""The contract every sink implements, and what sinks share."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from nvpipe.frames import ColorSpec


@runtime_checkable
class Sink(Protocol):
    """One output being encoded into its staging path (``nvpipe.sinks.outputs`` owns the target).

    Attributes:
        pixel_format: what ``write`` takes: ``"rgb24"`` ``(H, W, 3)``, ``"rgba"``
            ``(H, W, 4)``, ``"gray"`` ``(H, W)`` or ``"nv12"`` ``(H + ceil(H/2), 2*ceil(W/2))``,
            uint8, ``H, W`` the output's size.
        color: the :class:`~nvpipe.frames.ColorSpec` an ``"nv12"`` array is converted with
            (and the stream is tagged with); RGB formats ignore it.
        accepts_cuda: ``write`` takes CUDA tensors (NVENC, the null output); otherwise
            uint8 NumPy arrays or CPU tensors.
        encoder_name: the encoder, for the run's summary.
        frames_written: frames ``write`` has taken.
        notes: what the run's summary should say of this output (audio not copied or
            dropped, and why); read after ``finish``.
    """

    pixel_format: str
    color: ColorSpec
    accepts_cuda: bool
    encoder_name: str
    frames_written: int
    notes: list[str]

    def write(self, array, pts: int) -> None:
        """Encodes one frame; ``pts`` in the input's ``time_base``."""

    def finish(self) -> None:
        """Completes a playable file at the staging path. Raises ``OutputError`` on failure
        or when no frame was written."""

    def discard(self) -> None:
        """Removes whatever was written at the staging path. Never raises; idempotent."""


class SinkBase:
    """Defaults of the contract: CPU arrays in, nothing written yet."""

    accepts_cuda = False
    frames_written = 0
    notes: tuple[str, ...] = ()
