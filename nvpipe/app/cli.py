"""``nvpipe`` command line: a thin shell over ``nvpipe.engine.runner.run`` and ``nvpipe.app.batch``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Optional, Sequence

from nvpipe.platform.threads import tune_for_pipeline

tune_for_pipeline()  # before anything imports torch

from nvpipe.errors import UsageError, raise_terminated, user_errors  # noqa: E402
from nvpipe.app.automation import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK,  # noqa: E402
                                   EXIT_TERMINATED, EXIT_USAGE, exit_code_for)

# RVM's inference.py flags: given to `nvpipe run`, they mean RVM's command line, which
# `python -m nvpipe.inference` takes as it is (argparse would otherwise take their values
# as IN and OUT).
RVM_FLAGS = ("--input-source", "--input-resize", "--downsample-ratio", "--output-type",
             "--output-composition", "--output-alpha", "--output-foreground",
             "--output-video-mbps", "--seq-chunk", "--num-workers", "--disable-progress",
             "--checkpoint")
RVM_HINT = ("these are RVM's inference.py options: run `python -m nvpipe.inference` with "
            "them as they are, or `nvpipe run IN OUT` with nvpipe's (see nvpipe run --help)")

EXAMPLES = """examples:
  nvpipe run in.mp4 out.mp4                          composite over green
  nvpipe run in.mp4 out.mov                          ProRes 4444 with alpha
  nvpipe run photo.jpg cut.png                       one picture: an RGBA cut-out
  nvpipe run in.mp4 out.mp4 --background blur        the input, blurred, behind the subject
  nvpipe run clips/ out/ --jobs 2                    a batch, two clips at once
  nvpipe run --watch inbox/ out/                     convert clips as they arrive
  nvpipe run in.mp4 out.mp4 --json --progress prog.txt   for scripts
"""


def _epilog() -> str:
    from nvpipe.app.automation import EXIT_CODES

    codes = "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES.items())
    return (f"{EXAMPLES}\nexit codes:\n{codes}\n\nThe README (README.md in the source tree) "
            f"has every option, live inputs and\noutputs, batches, the watch folder and the "
            f"Python API.")


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions and help as argparse does; keeps text with line breaks (the
    examples and exit codes of the epilog) as written."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, not the whole usage block."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def parse_size(text: str) -> tuple[int, int]:
    from nvpipe.job import check_size

    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    try:
        return check_size((width, height), "size")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_bitrate(text: str) -> int:
    """'8M', '800k' or '2500000' -> bits per second."""
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"bitrate must look like 8M or 800k, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"bitrate must be positive, got {text!r}")
    return int(value)


def parse_ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratio must be a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"ratio must be in (0, 1], got {text}")
    return value


def _whole_number_at_least_1(name: str):
    """An argparse type: a whole number >= 1, errors naming the option (``chunk``, ``jobs``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {value}")
        return value

    return parse


parse_chunk = _whole_number_at_least_1("chunk")
parse_jobs = _whole_number_at_least_1("jobs")
parse_frames = _whole_number_at_least_1("frames")


def _seconds(name: str, *, zero_allowed: bool):
    """An argparse type: a time as ffmpeg takes it (``12.5``, ``HH:MM:SS.ms``) in seconds."""
    def parse(text: str) -> float:
        from nvpipe.sources.trim import parse_time

        try:
            value = parse_time(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if value < 0 or (value == 0 and not zero_allowed):
            raise argparse.ArgumentTypeError(
                f"{name} must be {'0 or more' if zero_allowed else 'more than 0'} seconds, "
                f"got {text!r}")
        return value

    return parse


parse_start = _seconds("start", zero_allowed=True)
parse_duration = _seconds("duration", zero_allowed=False)
parse_timeout = _seconds("timeout", zero_allowed=False)


def parse_fps(text: str) -> float:
    """``25``, ``29.97`` or ``30000/1001``."""
    from fractions import Fraction

    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"fps must look like 25, 29.97 or 30000/1001, "
                                         f"got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"fps must be positive, got {text!r}")
    from nvpipe.job import check_fps

    try:
        return check_fps(float(value))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


CODEC_HELP = ("h264 (.mp4/.mkv/.mov; the default for .mp4/.mkv), hevc (H.265, smaller files; "
              ".mp4/.mkv/.mov), av1 (smallest, slowest on the CPU; .mp4/.mkv/.webm), prores "
              "(ProRes 4444 with alpha for editing; .mov, the default there, or .mkv), vp9 (with "
              "alpha; .webm, the default there, or .mkv), png (RGBA pictures; OUT a folder or "
              "%%05d.png). Default: from OUT's extension")


def parse_subject_choice(text: str):
    """``--subject``: ``X,Y`` (pixels of the first frame) or ``main``."""
    from nvpipe.job import parse_subject

    try:
        return parse_subject(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_subject_arguments(parser: argparse.ArgumentParser) -> None:
    """``--subject`` and ``--subject-mask`` (``nvpipe.engine.subject``), for run and preview."""
    group = parser.add_argument_group(
        "subject", "keep one person (or a few): everyone else's alpha is zero in every "
                   "frame, the subject's matte untouched; tracked over time, found again by "
                   "appearance after a scene cut, and an empty matte while the subject is "
                   "out of shot")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--subject", metavar="X,Y", type=parse_subject_choice, action="append",
                        default=[],
                        help="the person under pixel X,Y of the first frame (input pixels, "
                             "after --start; the nearest person within 5%% of the frame's "
                             "longer side), repeatable to keep several; or 'main': the "
                             "largest person")
    choice.add_argument("--subject-mask", metavar="PATH",
                        help="a first-frame mask image, white where the people to keep are "
                             "(any size)")


def parse_option(text: str) -> tuple[str, str]:
    """``key=value`` (``--input-option``) -> ``(key, value)``."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"input option must look like key=value, got {text!r}")
    return key, value


def add_stream_arguments(run: argparse.ArgumentParser) -> None:
    """Live inputs and stream outputs (nvpipe.sources.live, nvpipe.sinks.stream)."""
    streams = run.add_argument_group(
        "streams", "IN may be - (standard input), a named pipe, an FFmpeg URL (udp://, "
                   "srt://, rtmp://, rtsp://, http://) or a camera (/dev/video0); OUT may be "
                   "- (standard output) or a URL (udp://, srt://, rtmp://). Live inputs "
                   "(network streams, cameras) recorded to files keep every frame, buffered "
                   "in memory up to $NVPIPE_RECORD_BUFFER_MB (1024); written to a live output "
                   "(-, a URL, a pipe) they drop the oldest frames when conversion falls "
                   "behind, so latency stays bounded. Files, pipes and http never drop.")
    streams.add_argument("--input-format", metavar="FMT",
                         help="the input's demuxer or device, as ffmpeg -f (mpegts, v4l2, ...)")
    streams.add_argument("--input-option", metavar="KEY=VALUE", type=parse_option,
                         action="append", default=[],
                         help="a demuxer/protocol option, as ffmpeg -KEY VALUE (repeatable), "
                              "e.g. fifo_size=1000000 or video_size=1280x720")
    streams.add_argument("--format", dest="output_format", metavar="FMT",
                         help="a stream output's format: nut (rawvideo, keeps alpha), y4m, "
                              "mpegts, flv, matroska (default for URLs: from the scheme)")
    streams.add_argument("--key", metavar="OUT",
                         help="key and fill: also write the alpha as a grey video (the key) "
                              "to OUT; the main output is then the fill (the foreground, "
                              "unless --type says otherwise)")
    streams.add_argument("--timeout", type=parse_timeout, metavar="SECONDS",
                         help="end a stream input after this long without data (default: "
                              "10 for URLs; pipes wait for their end)")
    live = streams.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_true", default=None,
                      help="pace as live (drop frames rather than fall behind) whatever IN "
                           "and OUT are")
    live.add_argument("--no-live", dest="live", action="store_false",
                      help="never drop frames, even for a network stream (the stream waits "
                           "in FFmpeg's own buffers, which may overflow)")
    streams.add_argument("--no-cut-reset", dest="cut_reset", action="store_false",
                         help="do not reset the network's memory at scene cuts (default: "
                              "reset, so the last shot does not linger in the next)")


def add_automation_arguments(run: argparse.ArgumentParser) -> None:
    """--json, --progress and the watch folder (nvpipe.app.automation, nvpipe.app.watch)."""
    scripts = run.add_argument_group("scripts and automation")
    scripts.add_argument("--json", action="store_true",
                         help="print a JSON summary on standard output at the end (status, "
                              "exit_code, outputs, frames, fps, decisions, notes, dropped, "
                              "latency); messages stay on standard error")
    scripts.add_argument("--progress", metavar="FILE", dest="progress_file",
                         help="write machine-readable progress to FILE (- for standard "
                              "output), as ffmpeg -progress: key=value lines, each block "
                              "ending progress=continue, the last progress=end")
    watch = run.add_argument_group(
        "watch folder", "nvpipe run --watch IN/ OUT/: convert the clips in IN, then each new "
                        "one as it arrives and is complete (written and closed, or unchanged "
                        "for --watch-settle seconds), exactly once (OUT/.nvpipe-batch.json "
                        "records them); until Ctrl-C")
    watch.add_argument("--watch", action="store_true", help="watch IN (a folder)")
    watch.add_argument("--watch-settle", type=parse_timeout, default=None, metavar="SECONDS",
                       help="a clip unchanged this long is complete (default 2)")
    watch.add_argument("--watch-exit-after", type=_whole_number_at_least_1("clips"),
                       metavar="N", help="stop after N clips (converted or failed)")
    watch.add_argument("--watch-idle", type=parse_timeout, metavar="SECONDS",
                       help="stop after this long with nothing new")


def build_parser() -> argparse.ArgumentParser:
    from nvpipe.app.commands import VARIANT_HELP
    from nvpipe.job import (CODECS, CPU_ENGINES, DEFAULT_GREEN, DTYPES, ENCODERS, OUTPUT_KINDS,
                            VARIANTS)

    from nvpipe.app.devices import DEVICE_CHOICES, DEVICE_METAVAR

    parser = _Parser(prog="nvpipe", description="Human video matting (Robust Video Matting).",
                     epilog=_epilog(), formatter_class=_HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run", help="convert a video, an image sequence, a picture, or a batch of videos",
        description="Convert IN to OUT. IN may be a video, an image sequence (directory or "
                    "%05d.png pattern), one picture (OUT then one picture too: cut.png), or "
                    "for a batch a directory of videos or a glob; OUT is then a directory or "
                    "a template containing {stem}.",
        epilog=_epilog(), formatter_class=_HelpFormatter)
    run.add_argument("input", metavar="IN")
    run.add_argument("output", metavar="OUT")
    run.add_argument("--ratio", type=parse_ratio, default=None,
                     help="downsample ratio for the network (default: min(512/max(H,W), 1))")
    run.add_argument("--device", choices=DEVICE_CHOICES, metavar=DEVICE_METAVAR,
                     type=str.lower, default=os.environ.get("NVPIPE_DEVICE", "auto"),
                     help="auto (default, or $NVPIPE_DEVICE): the GPU pipeline where it can run "
                          "here (see `nvpipe info`), else the CPU; a GPU run that fails before "
                          "its first frame reruns on the CPU; cuda:N the N-th GPU")
    run.set_defaults(cpu_fallback=False)  # Job.cpu_fallback: _run sets it when auto picks cuda
    run.add_argument("--variant", choices=VARIANTS, default="mobilenetv3", help=VARIANT_HELP)
    run.add_argument("--weights", metavar="PATH", help=".pth or .onnx weights (default: "
                     "$NVPIPE_WEIGHTS, the cache, then the official file)")
    run.add_argument("--background", metavar="B", default=None,
                     help="composite background: a colour (#00ff00, any CSS/X11 name such as "
                          "rebeccapurple, 0,255,0), blur[:RADIUS] (the input itself, blurred; "
                          "RADIUS in pixels), an image or a video; 'none' writes RGBA "
                          f"(default: {DEFAULT_GREEN}; RGBA for .mov/.webm/PNG outputs)")
    run.add_argument("--alpha", metavar="PATH", help="also write the alpha matte here")
    run.add_argument("--foreground", metavar="PATH", help="also write the foreground here")
    run.add_argument("--type", dest="kind", default=None,
                     choices=OUTPUT_KINDS,
                     help="what OUT holds (default: composite, or rgba for alpha formats)")
    run.add_argument("--codec", choices=CODECS, help=CODEC_HELP)
    quality = run.add_mutually_exclusive_group()
    quality.add_argument("--crf", type=int, help="constant quality (lower is better)")
    quality.add_argument("--bitrate", type=parse_bitrate, help="e.g. 8M")
    run.add_argument("--preset", help="encoder preset (x264: ultrafast..veryslow)")
    run.add_argument("--encoder", choices=ENCODERS, default="auto",
                     help="with --device cuda: NVENC where the GPU has it (auto: the CPU "
                          "encoder, with a note, where NVENC cannot start), always, or PyAV on "
                          "the CPU; alpha formats always encode on the CPU")
    run.add_argument("--chunk", type=parse_chunk, default=1, metavar="T",
                     help="frames per network call (default 1)")
    run.add_argument("--resize", type=parse_size, metavar="WxH", help="resize the input first")
    run.add_argument("--dtype", choices=DTYPES,
                     help="network precision (default: float32 on cpu, float16 on cuda). "
                          "bfloat16: CPU, opt-in: a faster network where the CPU has "
                          "AVX512-BF16/AMX (0.69x the float32 ONNX Runtime engine's time, "
                          "512x288, one loaded 2-core run), but its alpha is further from "
                          "float32 than the 1e-3 default bar on 5 of the 12 shared clips: "
                          "worst-frame MAD 4.4e-3, 5.7e-4 on the people clips "
                          "(bench/results/cpu-fidelity.json)")
    run.add_argument("--engine", choices=CPU_ENGINES, default=os.environ.get("NVPIPE_ENGINE"),
                     help="what runs the network on the CPU: auto (default, or "
                          "$NVPIPE_ENGINE): the fastest of those installed, timed once per "
                          "machine and input size and cached; torch; onnxruntime; openvino "
                          "(float32, 53 vs onnxruntime's 76 ms per 480x270 frame on a 2-core "
                          "AMD EPYC, same output within 1e-4)")
    run.add_argument("--profile", action="store_true",
                     help="print where a frame's time went: ms per frame per stage, cores "
                          "busy, queue waits, the network's GFLOP/s against this machine's "
                          "matmul peak")
    run.add_argument("--start", type=parse_start, default=0.0, metavar="T",
                     help="skip the input's first T seconds (12.5 or HH:MM:SS.ms, as ffmpeg "
                          "-ss); the output and its audio begin there, at time 0")
    run.add_argument("--duration", type=parse_duration, default=None, metavar="T",
                     help="convert T seconds (from --start), audio trimmed alike")
    run.add_argument("--frames", type=parse_frames, default=None, metavar="N",
                     help="stop after N frames")
    run.add_argument("--fps", type=parse_fps, default=None, metavar="R",
                     help="frame rate of a picture-sequence input (default 30; 29.97, "
                          "30000/1001); videos keep their own timing, so it is refused for them")
    run.add_argument("-y", "--overwrite", action="store_true",
                     help="replace existing outputs (only ever by a complete output)")
    run.add_argument("--keep-partial", action="store_true",
                     help="when the run fails (a damaged input, say), keep the frames done as "
                          "a playable file; never over an existing file. Ctrl-C always keeps them")
    # Scale-out (nvpipe.app.schedule): a batch's clips in parallel, here or on a Ray cluster.
    run.add_argument("--jobs", type=parse_jobs, default=1, metavar="N",
                     help="batches: N clips at once, each in its own process (default 1; "
                          "`nvpipe info` says how many this machine takes)")
    run.add_argument("--cluster", metavar="ADDRESS",
                     help="batches: each clip a task on the Ray cluster at ADDRESS "
                          "(HOST:6379, ray://HOST:10001) or 'auto' (this machine's Ray, "
                          "started if none); outputs go to OUT, which every node must see")
    add_stream_arguments(run)
    add_automation_arguments(run)
    add_subject_arguments(run)
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="stages, encoders and telemetry; tracebacks of internal errors")

    from nvpipe.app.preview import add_preview_command

    add_preview_command(commands, add_subject_arguments=add_subject_arguments,
                        parse_ratio=parse_ratio, parse_start=parse_start)
    commands.add_parser("info", help="what this machine can do (GPU, decoders, weights)")
    commands.add_parser("doctor", help="same as info")
    from nvpipe.app.commands import add_commands  # --version, export, weights

    add_commands(parser, commands)
    return parser


def _rvm_flags(argv: Sequence[str]) -> list[str]:
    """RVM's inference.py flags among ``argv`` (``--flag`` or ``--flag=value``)."""
    return [arg.split("=", 1)[0] for arg in argv if arg.split("=", 1)[0] in RVM_FLAGS]


def main(argv: Optional[Sequence[str]] = None) -> int:
    code = _main(argv)
    schedule = sys.modules.get("nvpipe.app.schedule")
    if schedule is not None and schedule.ABANDONED.is_set():
        # A Ray connection still trying on its thread (issue 22): leave without the
        # interpreter's teardown, in which Ray's core may abort.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def program() -> int:
    """The ``nvpipe`` program (its console script, ``python -m nvpipe``): ``main()`` in a
    process set up as a program that starts and ends (``nvpipe.platform.process``: the
    garbage collector, torch's backend scan; 0.5 s less of a CPU run, 2 cores)."""
    from nvpipe.platform.process import end_program, start_program

    start_program()
    code = main()
    end_program()
    return code


def _main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rvm_flags = _rvm_flags(argv)
    if rvm_flags and "--help" not in argv and "-h" not in argv:
        print(f"nvpipe: error: {', '.join(rvm_flags)}: {RVM_HINT}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)
    report = _Report(args)
    try:
        if args.command in ("info", "doctor"):
            from nvpipe.app.info import format_report

            print(format_report())
            return EXIT_OK
        from nvpipe.app.commands import COMMANDS, run_command

        if args.command in COMMANDS:
            return run_command(args)
        if args.command == "preview":
            from nvpipe.app.preview import run_preview

            return run_preview(args)
        return report.done(_run(args, report))
    except user_errors() as error:
        print(f"nvpipe: error: {error}", file=sys.stderr)
        return report.failed(exit_code_for(error), str(error))
    except KeyboardInterrupt as interrupt:
        from nvpipe.engine.runner import Interrupted
        from nvpipe.errors import Terminated

        terminated = isinstance(interrupt, Terminated) or getattr(interrupt, "terminated", False)
        how = "terminated" if terminated else "interrupted"
        if isinstance(interrupt, Interrupted):
            done = interrupt.result
            print(f"nvpipe: {how} after {done.frames} frames; {_kept(done)}", file=sys.stderr)
            if not report.fields:
                report.summary_of(done)
        else:
            print(f"nvpipe: {how}", file=sys.stderr)
        return report.failed(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED, how)
    except Exception as error:  # noqa: BLE001 - one line unless asked for the traceback
        if getattr(args, "verbose", False) or os.environ.get("NVPIPE_DEBUG"):
            raise
        print(f"nvpipe: internal error: {type(error).__name__}: {error} "
              "(run with --verbose for the traceback)", file=sys.stderr)
        return report.failed(EXIT_FAILED, f"internal error: {type(error).__name__}: {error}")
    finally:
        report.close()


class _Report:
    """What ``nvpipe run`` tells scripts: the ``--json`` summary (printed once, at the end,
    whatever the outcome) and the ``--progress`` stream."""

    def __init__(self, args: argparse.Namespace):
        self.json = bool(getattr(args, "json", False))
        self.fields: dict = {}
        self.progress = None
        self._printed = False
        self._target = getattr(args, "progress_file", None)

    def open_progress(self):
        """The ``--progress`` stream, opened on first use (None without the option)."""
        if self._target and self.progress is None:
            from nvpipe.app.automation import ProgressStream

            self.progress = ProgressStream(self._target)
        return self.progress

    def summary_of(self, result, device_decision: Optional[dict] = None) -> None:
        from nvpipe.app.automation import run_summary

        self.fields = run_summary(result, device_decision=device_decision)

    def done(self, code: int) -> int:
        return self._emit(code, None)

    def failed(self, code: int, error: str) -> int:
        return self._emit(code, error)

    def _emit(self, code: int, error: Optional[str]) -> int:
        if self.json and not self._printed:
            from nvpipe.app.automation import print_json

            self._printed = True
            print_json(self.fields, code=code, error=error)
        return code

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def _stream_job(job, args: argparse.Namespace):
    """The job with the stream outputs' options of ``add_stream_arguments`` applied (the
    main output's kind and format, ``--key``) and the ``--input-option`` pairs."""
    from dataclasses import replace

    from nvpipe.job import OutputSpec
    from nvpipe.sinks import is_stream_output

    outputs = list(job.outputs)
    main = outputs[0]
    if is_stream_output(main.path) and args.kind is None and args.background is None:
        # Like .mov/.webm for files: alpha where the stream format keeps it (rawvideo NUT).
        from nvpipe.sinks.stream import stream_format

        keeps_alpha = stream_format(str(main.path), args.output_format) == "nut"
        main = replace(main, kind="rgba" if keeps_alpha and not args.key else "composite")
    if args.key:
        if args.kind is None:
            main = replace(main, kind="foreground")
        outputs.append(OutputSpec(args.key, kind="alpha", crf=main.crf, bitrate=main.bitrate,
                                  preset=main.preset, format=args.output_format
                                  if is_stream_output(args.key) else None))
    outputs[0] = replace(main, format=args.output_format)
    # --input-format, --timeout, --live/--no-live and --no-cut-reset reach the job by their Job field
    # names (batch.job_from_args); the repeated --input-option pairs become its dict.
    return replace(job, outputs=outputs, input_options=dict(args.input_option))


def _live_line(stats) -> None:
    print(f"nvpipe: live: {stats.describe()}", file=sys.stderr)


def _check_usage(args: argparse.Namespace) -> None:
    """Options that do not go together (``UsageError``: exit code 2)."""
    from nvpipe.app.automation import stdout_is_taken

    taken = stdout_is_taken(args)
    if taken and args.json:
        raise UsageError("--json prints on standard output, which the output - already takes: "
                         "write the output elsewhere, or leave out --json")
    if taken and args.progress_file == "-":
        raise UsageError("--progress - writes to standard output, which the output - already "
                         "takes: give --progress a file")
    if args.json and args.progress_file == "-":
        raise UsageError("--json and --progress - both write to standard output: give "
                         "--progress a file")
    if args.watch and (args.jobs > 1 or args.cluster):
        raise UsageError("--watch converts one clip at a time: leave out --jobs and --cluster")
    if not args.watch and any(value is not None for value in (
            args.watch_settle, args.watch_exit_after, args.watch_idle)):
        raise UsageError("--watch-settle, --watch-exit-after and --watch-idle go with --watch")
    if args.cluster and ":" in args.device:
        raise UsageError(f"--device {args.device} names a GPU of this machine; with --cluster, "
                         f"Ray assigns the GPUs (give --device cuda)")


def _run(args: argparse.Namespace, report: "_Report") -> int:
    from nvpipe.app.batch import batch_outputs, is_batch, job_from_args
    from nvpipe.app.devices import resolve
    from nvpipe.app.schedule import run_batch
    from nvpipe.engine.fallback import run_guarded
    from nvpipe.sources import is_picture_input

    _check_usage(args)
    requested = args.device
    if args.cluster and requested == "auto":
        not_cuda = None  # the cluster's GPUs decide, not this machine's (schedule.cluster_device)
    else:
        args.device, not_cuda = resolve(requested)
    device_decision = {"device": args.device, "device_requested": requested}
    if not_cuda:
        device_decision["device_why_not_cuda"] = not_cuda
    if args.verbose and requested == "auto":
        print(f"nvpipe: device {args.device}" + (f" (not cuda: {not_cuda})" if not_cuda else ""),
              file=sys.stderr)
    # auto never does worse than cpu: a GPU run failing before its first frame reruns there
    # (Job.cpu_fallback; job_from_args reads it from args like every Job field).
    args.cpu_fallback = requested == "auto" and args.device.startswith("cuda")
    progress = report.open_progress()
    if args.watch:
        return _watch(args, progress, report, device_decision)
    batch = is_batch(args.input)
    if args.fps is not None and (batch or not is_picture_input(args.input)):
        raise UsageError("--fps is for picture-sequence inputs (a folder or %05d.png): a "
                         "video keeps its own timing")
    if batch:
        # The template's main output stands for every clip's: its format decides the kind.
        template = job_from_args(args, output=batch_outputs("clip", args.output)[0])
        summary = run_batch(args.input, args.output, template,
                            progress_factory=_progress_factory(args, progress),
                            jobs=args.jobs, cluster=args.cluster, verbose=args.verbose)
        print(summary.report(), file=sys.stderr)
        _batch_report(report, summary, device_decision)
        return EXIT_FAILED if summary.failed or summary.not_started else EXIT_OK

    if args.jobs > 1 or args.cluster:
        raise UsageError("--jobs and --cluster are for batches: give a folder of videos or a glob")
    job = _stream_job(job_from_args(args), args)
    callback = _progress_factory(args, progress)
    bar = callback(os.path.basename(args.input)) if callback is not None else None
    try:
        result = run_guarded(job, progress=bar, verbose=args.verbose,
                             live_report=_live_line if args.verbose else None,
                             profile=getattr(args, "profile", False))
    except KeyboardInterrupt as interrupt:
        if hasattr(interrupt, "result"):
            report.summary_of(interrupt.result, device_decision)
        raise
    finally:
        if bar is not None and hasattr(bar, "finish"):
            bar.finish()
    report.summary_of(result, device_decision)
    for note in result.notes:
        print(f"nvpipe: note: {note}", file=sys.stderr)
    if result.cuts and not args.quiet:
        shown = ", ".join(str(i) for i in result.cuts[:10]) + (", ..." if len(result.cuts) > 10 else "")
        print(f"nvpipe: reset the network's memory at {len(result.cuts)} scene "
              f"cut{'s' * (len(result.cuts) > 1)} (frames {shown})", file=sys.stderr)
    if result.decided and not args.quiet:
        print(f"nvpipe: decided: {'; '.join(result.decided)}", file=sys.stderr)
    if result.live is not None and not args.quiet:
        print(f"nvpipe: live: {result.live.describe()}", file=sys.stderr)
    if args.verbose:
        for path, encoder in result.encoders.items():
            print(f"nvpipe: {path}: encoder {encoder}", file=sys.stderr)
        if result.telemetry:
            print(f"nvpipe: telemetry {result.telemetry}", file=sys.stderr)
    if result.profile is not None:
        from nvpipe.engine.profile import format_profile

        print(format_profile(result.profile), file=sys.stderr)
    if not args.quiet:
        encoders = ", ".join(sorted(set(result.encoders.values())))
        engine = (f"network {result.engine}, "
                  if (result.device or job.device) == "cpu" and result.engine else "")
        print(f"nvpipe: {result.frames} frames in {result.seconds:.1f} s "
              f"({result.fps:.1f} fps on {result.device or job.device}, {engine}{encoders}) -> "
              f"{', '.join(result.outputs)}", file=sys.stderr)
    return EXIT_OK


def _progress_factory(args: argparse.Namespace, progress):
    """A clip's progress callback: the bar (unless --quiet) and the --progress stream."""
    if progress is None and args.quiet:
        return None

    def factory(label: str):
        parts = []
        if not args.quiet:
            from nvpipe.app.progress import ProgressBar  # tqdm: 0.03 s, only where a bar shows

            parts.append(ProgressBar(label))
        if progress is not None:
            parts.append(progress.for_clip(os.path.basename(label.split("] ")[-1]),
                                           clip=label[1:].split("]")[0] if label.startswith("[")
                                           else None))
        return parts[0] if len(parts) == 1 else _Both(parts)

    return factory


class _Both:
    """Two progress callbacks as one (the bar and the --progress stream)."""

    def __init__(self, parts):
        self.parts = parts

    def __call__(self, done, total, elapsed):
        for part in self.parts:
            part(done, total, elapsed)

    def finish(self):
        for part in self.parts:
            if hasattr(part, "finish"):
                part.finish()


def _batch_report(report: "_Report", summary, device_decision: dict) -> None:
    from nvpipe.app.automation import batch_summary

    report.fields = batch_summary(summary)
    report.fields["decisions"] = dict(device_decision)


def _watch(args, progress, report: "_Report", device_decision: dict) -> int:
    from nvpipe.app.batch import batch_outputs, job_from_args
    from nvpipe.app.watch import SETTLE_S, watch

    summary = None
    try:
        template = job_from_args(args, output=batch_outputs("clip", args.output)[0])
        summary = watch(args.input, args.output, template,
                        settle=args.watch_settle or SETTLE_S, exit_after=args.watch_exit_after,
                        idle=args.watch_idle, progress_factory=_progress_factory(args, progress),
                        verbose=args.verbose)
    finally:
        if summary is not None:
            print(summary.report().replace("nvpipe: batch:", "nvpipe: watch:", 1), file=sys.stderr)
            _batch_report(report, summary, device_decision)
    return EXIT_FAILED if summary.failed else EXIT_OK


def _kept(result) -> str:
    from nvpipe.engine.runner import describe_outcome

    return describe_outcome(result.placed, keep_partial=True)


if __name__ == "__main__":
    sys.exit(main())
