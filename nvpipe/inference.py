"""RVM's command line, unchanged: ``python -m nvpipe.inference`` takes the flags of RVM's
``inference.py`` with the same meanings and writes the same outputs, on nvpipe's pipeline
(``nvpipe.convert_video``)::

    python -m nvpipe.inference \\
        --variant mobilenetv3 \\
        --checkpoint rvm_mobilenetv3.pth \\
        --device cuda \\
        --input-source input.mp4 \\
        --downsample-ratio 0.25 \\
        --output-type video \\
        --output-composition composition.mp4 \\
        --output-alpha alpha.mp4 \\
        --output-foreground foreground.mp4 \\
        --output-video-mbps 4 \\
        --seq-chunk 12

As RVM's: ``--input-source`` a video file or a folder of pictures; ``--output-type video``
writes H.264 videos at ``--output-video-mbps`` (default 1), the composition over RVM's green
(RGB 120, 255, 155); ``png_sequence`` writes folders of ``0000.png``, ``0001.png``... (the
composition as RGBA, the alpha grey, the foreground RGB); ``--input-resize W H`` resizes the
input first; the network runs in float32, as RVM's converter runs it. ``--num-workers`` is
accepted (decoding already runs on a thread of its own).

Where RVM requires a flag that nvpipe can do without, nvpipe takes a default: ``--variant``
mobilenetv3, ``--checkpoint`` nvpipe's weights (``$NVPIPE_WEIGHTS``, the cache, the official
file), ``--device`` auto (the GPU where nvpipe's GPU pipeline runs, else the CPU; ``cuda:N``
as torch takes it). Outputs are replaced, as RVM replaces them. Exit codes are
``nvpipe run``'s (``nvpipe.app.automation``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Optional, Sequence

from nvpipe.platform.threads import tune_for_pipeline

tune_for_pipeline()  # before anything imports torch

from nvpipe.app.automation import (EXIT_CODES_TEXT, EXIT_FAILED, EXIT_INTERRUPTED,  # noqa: E402
                                   EXIT_OK, EXIT_TERMINATED, EXIT_USAGE, exit_code_for)
from nvpipe.errors import raise_terminated, user_errors  # noqa: E402

VARIANTS = ("mobilenetv3", "resnet50")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - argparse API: one line, exit code 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from nvpipe.app.devices import DEVICE_CHOICES, DEVICE_METAVAR

    parser = _Parser(prog="python -m nvpipe.inference",
                     description="RVM's inference.py command line on nvpipe's pipeline (the "
                                 "same flags, meanings and outputs).",
                     epilog=EXIT_CODES_TEXT + ".")
    parser.add_argument("--variant", choices=VARIANTS, default="mobilenetv3",
                        help="the network (default mobilenetv3)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="RVM's .pth (or the official .onnx); default: nvpipe's weights")
    parser.add_argument("--device", type=str.lower, choices=DEVICE_CHOICES,
                        metavar=DEVICE_METAVAR, default="auto",
                        help="cpu, cuda or cuda:N (default auto: the GPU where it can run)")
    parser.add_argument("--input-source", required=True, metavar="PATH",
                        help="a video file or a folder of pictures")
    parser.add_argument("--input-resize", type=int, nargs=2, metavar=("W", "H"),
                        help="resize the input (and so the outputs) first")
    parser.add_argument("--downsample-ratio", type=float, metavar="R",
                        help="the network's downsample ratio (default: min(512 / max(H, W), 1))")
    parser.add_argument("--output-type", required=True, choices=("video", "png_sequence"))
    parser.add_argument("--output-composition", metavar="PATH",
                        help="video: over green; png_sequence: RGBA pictures in this folder")
    parser.add_argument("--output-alpha", metavar="PATH", help="the alpha")
    parser.add_argument("--output-foreground", metavar="PATH", help="the foreground")
    parser.add_argument("--output-video-mbps", type=float, default=1, metavar="MBPS",
                        help="video outputs' bit rate (default 1)")
    parser.add_argument("--seq-chunk", type=int, default=1, metavar="T",
                        help="frames through the network at once (default 1)")
    parser.add_argument("--num-workers", type=int, default=0, metavar="N",
                        help="accepted for RVM's scripts (decoding runs on its own thread)")
    parser.add_argument("--disable-progress", action="store_true", help="no progress bar")
    return parser


def _check(args: argparse.Namespace) -> Optional[str]:
    """RVM's converter's checks, as one-line messages."""
    if args.downsample_ratio is not None and not 0 < args.downsample_ratio <= 1:
        return "--downsample-ratio must be in (0, 1]"
    if not any((args.output_composition, args.output_alpha, args.output_foreground)):
        return "give at least one of --output-composition, --output-alpha, --output-foreground"
    if args.seq_chunk < 1:
        return "--seq-chunk must be at least 1"
    if args.num_workers < 0:
        return "--num-workers must be 0 or more"
    if args.input_resize is not None and min(args.input_resize) < 1:
        return "--input-resize takes a positive width and height"
    if args.output_video_mbps is not None and args.output_video_mbps <= 0:
        return "--output-video-mbps must be positive"
    return None


def convert(args: argparse.Namespace):
    """Loads the network as RVM's ``Converter`` does (float32, on the device) and converts."""
    import torch

    import rvm
    from nvpipe.api import convert_video
    from nvpipe.app.devices import resolve

    device, _ = resolve(args.device)
    if device.startswith("cuda"):
        from nvpipe.platform.gpu import check_cuda_ready
        from nvpipe.job import gpu_index

        check_cuda_ready(need_decoder=False, gpu_id=gpu_index(device))
    try:
        model = rvm.load(args.checkpoint, variant=args.variant, device=device, dtype=torch.float32)
    except rvm.WeightsError as error:
        from nvpipe.errors import NvpipeError

        raise NvpipeError(str(error)) from None
    return convert_video(
        model,
        input_source=args.input_source,
        input_resize=tuple(args.input_resize) if args.input_resize else None,
        downsample_ratio=args.downsample_ratio,
        output_type=args.output_type,
        output_composition=args.output_composition,
        output_alpha=args.output_alpha,
        output_foreground=args.output_foreground,
        output_video_mbps=args.output_video_mbps if args.output_type == "video" else None,
        seq_chunk=args.seq_chunk,
        num_workers=args.num_workers,
        progress=not args.disable_progress,
        device=device,
        dtype=torch.float32,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)
    try:
        result = convert(args)
    except user_errors() as error:
        print(f"nvpipe: error: {error}", file=sys.stderr)
        return exit_code_for(error)
    except KeyboardInterrupt as interrupt:
        from nvpipe.errors import Terminated

        terminated = isinstance(interrupt, Terminated) or getattr(interrupt, "terminated", False)
        print(f"nvpipe: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - one line, as nvpipe run
        print(f"nvpipe: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED
    if not args.disable_progress:
        print(f"nvpipe: {result.frames} frames -> {', '.join(result.outputs)}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
