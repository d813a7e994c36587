"""``convert_video``: RVM's converter's arguments, nvpipe's pipeline underneath."""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

from nvpipe.app.batch import carries_alpha
from nvpipe.errors import NvpipeError
from nvpipe.job import RVM_GREEN, Job, OutputSpec  # noqa: F401 - RVM_GREEN: its default background
from nvpipe.engine.runner import RunResult, default_dtype, run

# RVM's ImageSequenceWriter names pictures by their 4-digit number.
RVM_PICTURE_NAME = "%04d.png"


def _as_network(model, device: str, dtype: torch.dtype):
    """None, a variant name, an ``rvm.MattingNetwork``, any module holding RVM's state_dict,
    or a TorchScript module (frozen ones too) -> a network for the matting stage on
    ``device`` in ``dtype`` (``nvpipe.model.adapters.as_network``)."""
    from nvpipe.model.adapters import as_network

    return as_network(model, device, dtype)


def _as_tuple(subject) -> tuple:
    """``Job.subject`` from the API's forms: None, "main", "X,Y", (x, y), or a list."""
    if subject is None:
        return ()
    if isinstance(subject, str) or (isinstance(subject, (tuple, list)) and len(subject) == 2
                                    and all(isinstance(v, (int, float)) for v in subject)):
        return (subject,)
    return tuple(subject)


def convert_video(model=None, input_source: str = None, input_resize: Optional[tuple] = None,
                  downsample_ratio: Optional[float] = None, output_type: str = "video",
                  output_composition: Optional[str] = None, output_alpha: Optional[str] = None,
                  output_foreground: Optional[str] = None,
                  output_video_mbps: Optional[float] = None, seq_chunk: int = 1,
                  num_workers: int = 0, progress: bool = True,
                  device: Optional[Union[str, torch.device]] = None,
                  dtype: Optional[torch.dtype] = None, *, overwrite: bool = True,
                  background: Optional[str] = None, subject=None,
                  subject_mask: Optional[str] = None) -> RunResult:
    """Convert a video or image sequence, with the argument names of RVM's ``convert_video``.

    ``output_type`` "video" writes videos (the composition over RVM's green, RGB 120, 255,
    155 = ``nvpipe.job.RVM_GREEN``, or ``background``); "png_sequence" writes directories
    of PNGs named as RVM names them (``0000.png``, ``0001.png``...; the composition as RGBA).
    ``input_resize`` is (width, height); ``output_video_mbps`` sets the bitrate;
    ``seq_chunk`` frames go through the network at once. ``num_workers`` is accepted for
    compatibility (decoding already runs on its own thread). RVM's converter overwrites its
    outputs, so ``overwrite`` defaults to True here. ``device``/``dtype`` default to the
    model's; without a model module, to the CPU and to float16 on CUDA (float32 on the CPU).
    ``subject`` keeps one person, everyone else's alpha zero (``nvpipe.engine.subject``):
    ``"main"`` (the largest person), ``(x, y)`` or ``"X,Y"`` (the person under that pixel of
    the first frame), or a list of points; ``subject_mask``: a first-frame mask image, white
    where the people to keep are. ``result.decided`` says what was decided.
    """
    from nvpipe.job import subject_spec

    subject_spec(subject, subject_mask)  # NvpipeError for a bad choice, before any work
    from nvpipe.app.progress import ProgressBar
    from nvpipe.job import check_positive, check_ratio, check_size, check_whole

    # RVM's argument names in the messages (nvpipe.job's limits, one place).
    if downsample_ratio is not None:
        downsample_ratio = check_ratio(downsample_ratio, "downsample_ratio")
    seq_chunk = check_whole(seq_chunk, "seq_chunk")
    if input_resize is not None:
        input_resize = check_size(input_resize, "input_resize")
    if output_video_mbps is not None:
        output_video_mbps = check_positive(output_video_mbps, "output_video_mbps")
    if input_source is None:
        raise NvpipeError("input_source is required")
    if output_type not in ("video", "png_sequence"):
        raise NvpipeError(f"output_type must be 'video' or 'png_sequence', got {output_type!r}")
    if not any((output_composition, output_alpha, output_foreground)):
        raise NvpipeError("give at least one of output_composition, output_alpha, "
                          "output_foreground")
    from nvpipe.model.adapters import device_and_dtype

    device, dtype = device_and_dtype(model, device, dtype)  # the model's, as RVM's converter
    device = str(torch.device(device if device is not None else "cpu"))  # cuda:N kept
    if dtype is None:
        # Without a model to take it from: the job's default.
        dtype = default_dtype(device)
    dtype_names = {torch.float32: "float32", torch.float16: "float16"}
    if dtype not in dtype_names:
        raise NvpipeError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
    bitrate = int(output_video_mbps * 1_000_000) if output_video_mbps else None

    def spec(path: str, kind: str) -> OutputSpec:
        if output_type == "png_sequence":
            # RVM's names: 0000.png, 0001.png... in the folder (nvpipe run keeps %05d.png).
            path = path if "%" in os.path.basename(path) else os.path.join(path, RVM_PICTURE_NAME)
            return OutputSpec(path, kind=kind, codec="png")
        return OutputSpec(path, kind=kind, bitrate=bitrate)

    outputs = []
    if output_composition:
        composite_kind = "rgba" if output_type == "png_sequence" else "composite"
        if output_type == "video" and background is None and carries_alpha(output_composition):
            composite_kind = "rgba"
        outputs.append(spec(output_composition, composite_kind))
    if output_alpha:
        outputs.append(spec(output_alpha, "alpha"))
    if output_foreground:
        outputs.append(spec(output_foreground, "foreground"))
    job = Job(input=str(input_source), outputs=outputs, ratio=downsample_ratio, device=device,
              background=background or RVM_GREEN, chunk=seq_chunk, overwrite=overwrite,
              dtype=dtype_names[dtype],
              resize=tuple(input_resize) if input_resize else None,
              subject=_as_tuple(subject), subject_mask=subject_mask)
    network = _as_network(model, device, dtype)
    bar = ProgressBar(os.path.basename(str(input_source))) if progress else None
    result = run(job, progress=bar, network=network)
    if bar:
        bar.finish()
    return result
