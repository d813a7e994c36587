"""``nvpipe preview IN [OUT.png]``: a contact sheet to judge a matte before a long batch.

A few frames spread over the clip (``--frames``, default 4), each a row of input | alpha |
composite, with the frame's time, the ratio (automatic or given) and the subject marked
(a box round the people kept, or "subject absent"). Each sampled frame is preceded by
``WARMUP_FRAMES`` (8) frames run through the network first, so its recurrent state has
settled as it would have in a full run: the sample is reached by seeking (``--start``'s
machinery, ``nvpipe.sources.trim``), so a long clip costs ``frames x 9`` network calls, not
a conversion. The first sample is frame 8 (after frames 0-7), so a ``--subject`` is chosen
on frame 0, as in ``nvpipe run``; every later sample starts after a seek, which the subject
tracker takes as a scene cut: the subject is found again by appearance there
(``nvpipe.engine.subject``), the rule a run applies after a cut.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from nvpipe.errors import NvpipeError

WARMUP_FRAMES = 8
DEFAULT_SAMPLES = 4
THUMB_WIDTH = 400          # each of the three pictures in a row
HEADER = 22                # pixels of text above each row
MARK = (255, 48, 48)       # the subject's box


@dataclass
class Preview:
    """What ``make_preview`` made: the sheet's path, the frames sampled (counted from
    ``start``), the ratio and whether it was given, the subject's description, seconds."""

    path: str
    frames: list[int]
    ratio: float
    ratio_given: bool
    warmup: int
    seconds: float
    subject: Optional[str] = None
    absent: list[int] = field(default_factory=list)  # sampled frames without the subject


def add_preview_command(commands, *, add_subject_arguments, parse_ratio, parse_start) -> None:
    """The ``preview`` subcommand on ``commands``; the option helpers come from
    ``nvpipe.app.cli`` (which imports this module: no import back)."""
    from nvpipe.job import DEVICES, VARIANTS

    preview = commands.add_parser(
        "preview", help="a contact sheet of a few frames: input | alpha | composite",
        description="Write a PNG contact sheet of a few frames spread over IN, each as input "
                    "| alpha | composite with the ratio and the subject marked, to judge the "
                    f"matte before a long conversion. Each frame follows {WARMUP_FRAMES} "
                    "warm-up frames (reached by seeking), so it takes seconds, not a "
                    "conversion.")
    preview.add_argument("input", metavar="IN")
    preview.add_argument("output", metavar="OUT.png", nargs="?",
                         help="default: IN's name with .preview.png, in this folder")
    preview.add_argument("--frames", type=int, default=DEFAULT_SAMPLES, metavar="N",
                         help=f"frames on the sheet (default {DEFAULT_SAMPLES})")
    preview.add_argument("--warmup", type=int, default=WARMUP_FRAMES, metavar="N",
                         help=f"frames run before each one (default {WARMUP_FRAMES})")
    preview.add_argument("--ratio", type=parse_ratio, default=None,
                         help="downsample ratio (default: min(512/max(H,W), 1))")
    preview.add_argument("--device", choices=("auto", *DEVICES),
                         default=os.environ.get("NVPIPE_DEVICE", "auto"))
    preview.add_argument("--variant", choices=VARIANTS, default="mobilenetv3")
    preview.add_argument("--weights", metavar="PATH")
    preview.add_argument("--background", metavar="B", default=None,
                         help="the composite's background colour or picture (default green)")
    preview.add_argument("--start", type=parse_start, default=0.0, metavar="T",
                         help="the clip begins at T seconds (as nvpipe run --start)")
    add_subject_arguments(preview)


def run_preview(args) -> int:
    from nvpipe.platform.gpu import resolve_device

    device, _ = resolve_device(args.device)
    output = args.output or f"{Path(args.input).stem}.preview.png"
    result = make_preview(args.input, output, samples=args.frames, warmup=args.warmup,
                          ratio=args.ratio, device=device, variant=args.variant,
                          weights=args.weights, background=args.background, start=args.start,
                          subject=args.subject, subject_mask=args.subject_mask)
    frames = ", ".join(str(f) for f in result.frames)
    print(f"nvpipe: preview {result.path}: frames {frames}, each after {result.warmup} "
          f"warm-up frames, ratio {result.ratio:.3g} ({'given' if result.ratio_given else 'automatic'}), "
          f"in {result.seconds:.1f} s on {device}", file=sys.stderr)
    if result.subject:
        print(f"nvpipe: {result.subject}", file=sys.stderr)
    return 0


def sample_frames(count: int, samples: int, warmup: int) -> list[int]:
    """``samples`` frame numbers spread evenly over ``warmup .. count - 1`` (fewer when the
    clip is short); the first is ``warmup`` (or the last frame of a shorter clip)."""
    if count <= 0:
        return []
    first = min(warmup, count - 1)
    last = count - 1
    samples = max(1, min(samples, last - first + 1))
    if samples == 1:
        return [first]
    return sorted({first + round(i * (last - first) / (samples - 1)) for i in range(samples)})


def _frame_count(path: str, start: float, device: str) -> tuple[int, float, object]:
    from nvpipe.job import Job
    from nvpipe.sources import open_source, trim

    source = trim(open_source(path, device=device), Job(input=path, start=start))
    try:
        info = source.info
        count = info.frame_count
        if count is None:
            count = sum(1 for _ in source)
        return count, float(info.fps or 30), info
    finally:
        source.close()


def make_preview(input_path: str, output: str, *, samples: int = DEFAULT_SAMPLES,
                 warmup: int = WARMUP_FRAMES, ratio: Optional[float] = None,
                 device: str = "cpu", variant: str = "mobilenetv3",
                 weights: Optional[str] = None, background: Optional[str] = None,
                 start: float = 0.0, subject=None, subject_mask: Optional[str] = None,
                 network=None) -> Preview:
    """Write the contact sheet (module docstring) to ``output``; see ``Preview``."""
    import numpy as np
    import torch

    from nvpipe.engine.convert import Converter
    from nvpipe.engine.matting import MattingStage
    from nvpipe.engine.runner import default_dtype, load_network
    from nvpipe.job import DEFAULT_GREEN, Job, auto_ratio, subject_spec
    from nvpipe.sources import open_source, trim
    from nvpipe.sources.backgrounds import open_background

    if samples < 1:
        raise NvpipeError(f"--frames must be at least 1, got {samples}")
    if warmup < 0:
        raise NvpipeError(f"--warmup must be 0 or more, got {warmup}")
    if not str(output).lower().endswith(".png"):
        raise NvpipeError(f"the preview is a PNG picture: give OUT.png, got {output}")
    spec = subject_spec(subject, subject_mask)
    started = time.perf_counter()
    count, fps, info = _frame_count(input_path, start, device)
    frames = sample_frames(count, samples, warmup)
    if not frames:
        raise NvpipeError(f"{input_path} has no frames to preview")
    width, height = info.display_size
    given = ratio is not None
    ratio = ratio if given else auto_ratio(width, height)
    dtype = default_dtype(device)
    job = Job(input=input_path, device=device, variant=variant, weights=weights, ratio=ratio)
    if network is None:
        network = load_network(job, dtype)
    stage = MattingStage(network, ratio=ratio, device=device, dtype=dtype)
    converter = Converter(info, ratio=ratio, device=device, dtype=dtype)
    backdrop = open_background(background or DEFAULT_GREEN, width, height)
    selector = None
    if spec is not None:
        from nvpipe.engine.subject import SubjectSelector

        selector = SubjectSelector(spec, (width, height))
    rows, absent = [], []
    with torch.inference_mode():
        for number, frame_number in enumerate(frames):
            begin = max(0, frame_number - warmup)
            stage.reset()
            source = trim(open_source(input_path, device=device),
                          Job(input=input_path, start=start + begin / fps,
                              frames=frame_number - begin + 1))
            last = None
            try:
                for i, frame in enumerate(source):
                    src, src_sm = converter(frame)
                    coeff_a, coeff_b = stage(src_sm[None], [src])
                    if selector is not None:
                        # A seek is a cut for the tracker: the subject found by appearance.
                        selector(coeff_a[0], coeff_b[0], src_sm, cut=(i == 0 and number > 0))
                    last = (src, coeff_a[0], coeff_b[0], frame_number)
            finally:
                source.close()
            if last is None:
                continue
            src, coeff_a, coeff_b, _ = last
            rgba = _rgba(coeff_a, coeff_b, src)
            picture = src.float().cpu().numpy().transpose(1, 2, 0)
            colour = getattr(backdrop, "color", None)
            if colour is not None:
                back = np.broadcast_to(np.asarray(colour, np.float32), (*rgba.shape[:2], 3))
            else:
                image = backdrop.frame(frame_number)
                back = image.float().cpu().numpy().transpose(1, 2, 0) / (
                    255.0 if image.dtype == torch.uint8 else 1.0)
            tracker = selector.tracker if selector is not None else None
            box, lost = None, False
            if tracker is not None:
                box = _subject_box(tracker, (rgba.shape[1], rgba.shape[0]))
                lost = tracker.reports[-1].lost
                if lost:
                    absent.append(frame_number)
            label = (f"frame {frame_number} ({(start + frame_number / fps):.2f} s)   ratio "
                     f"{ratio:.3g} ({'given' if given else 'automatic'})")
            if tracker is not None:
                label += "   subject absent: alpha zero" if lost else "   subject: boxed in red"
            rows.append(_row(picture, rgba, back, box, label))
    sheet = _sheet(rows, f"{os.path.basename(input_path)}  {width}x{height}  "
                         f"{count} frames   each after {warmup} warm-up frames")
    staging = f"{output}.partial.png"
    sheet.save(staging)
    os.replace(staging, output)
    return Preview(str(output), frames, ratio, given, warmup, time.perf_counter() - started,
                   subject=selector.describe() if selector is not None else None, absent=absent)


def _rgba(coeff_a, coeff_b, src):
    """(H, W, 4) float32 NumPy: the frame's straight RGBA in [0, 1]."""
    import torch

    from nvpipe import kernels

    out = kernels.matting_tail(coeff_a, coeff_b, src, output="rgba", out_dtype=torch.float32,
                               impl="reference" if src.device.type == "cpu" else None)
    return out.float().cpu().numpy().transpose(1, 2, 0)


def _subject_box(tracker, size) -> Optional[tuple]:
    """The kept people's bounding box in the frame's pixels (None when absent)."""
    import numpy as np

    labels = tracker.labels
    ids = [t.id for t in tracker.tracks.values() if t.subject]
    if labels is None or not ids:
        return None
    where = np.isin(labels, ids)
    if not where.any():
        return None
    rows = np.nonzero(where.any(axis=1))[0]
    cols = np.nonzero(where.any(axis=0))[0]
    sx, sy = size[0] / labels.shape[1], size[1] / labels.shape[0]
    return (cols[0] * sx, rows[0] * sy, (cols[-1] + 1) * sx, (rows[-1] + 1) * sy)


def _row(picture, rgba, back, box, label):
    import numpy as np
    from PIL import Image, ImageDraw

    alpha = rgba[..., 3:4]
    composite = rgba[..., :3] * alpha + back * (1 - alpha)
    pictures = [picture, np.repeat(alpha, 3, axis=2), composite]
    height, width = rgba.shape[:2]
    thumb = (THUMB_WIDTH, max(1, round(height * THUMB_WIDTH / width)))
    images = [Image.fromarray((np.clip(p, 0, 1) * 255 + 0.5).astype(np.uint8)).resize(
        thumb, Image.BILINEAR) for p in pictures]
    row = Image.new("RGB", (3 * thumb[0], thumb[1] + HEADER), (24, 24, 24))
    for i, image in enumerate(images):
        row.paste(image, (i * thumb[0], HEADER))
    draw = ImageDraw.Draw(row)
    draw.text((6, 5), label, fill=(235, 235, 235))
    for i, name in enumerate(("input", "alpha", "composite")):
        draw.text((i * thumb[0] + 6, HEADER + 4), name, fill=(255, 255, 0))
    if box is not None:
        scale = thumb[0] / width
        x0, y0, x1, y1 = (v * scale for v in box)
        for i in range(3):
            draw.rectangle([i * thumb[0] + x0, HEADER + y0, i * thumb[0] + x1 - 1,
                            HEADER + y1 - 1], outline=MARK, width=2)
    return row


def _sheet(rows, title):
    from PIL import Image, ImageDraw

    width = max(row.width for row in rows)
    sheet = Image.new("RGB", (width, HEADER + sum(row.height for row in rows)), (0, 0, 0))
    ImageDraw.Draw(sheet).text((6, 5), title, fill=(255, 255, 255))
    y = HEADER
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    return sheet


__all__ = ["make_preview", "Preview", "sample_frames", "WARMUP_FRAMES", "add_preview_command",
           "run_preview"]
