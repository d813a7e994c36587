"""``nvpipe export``, ``nvpipe weights`` and ``nvpipe --version``: parsers and handlers.

``nvpipe.app.cli`` adds these to its parser (``add_commands``) and hands them their arguments
(``run_command``); nothing here imports torch before a command runs.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from nvpipe.errors import NvpipeError

COMMANDS = ("export", "weights")
VARIANT_HELP = ("mobilenetv3 (default; its official weights are fetched once) or resnet50 "
                "(no downloadable default here: give --weights rvm_resnet50.pth from RVM's release)")
SUFFIX_FORMATS = {".onnx": "onnx", ".pt": "torchscript",
                  ".torchscript": "torchscript", ".jit": "torchscript"}


def version_text() -> str:
    """``nvpipe X (torch Y, PyAV Z)``, read from the installed metadata (no imports)."""
    from nvpipe import __version__

    parts = []
    for name, label in (("torch", "torch"), ("av", "PyAV"), ("onnxruntime", "onnxruntime"),
                        ("openvino", "OpenVINO")):
        try:
            parts.append(f"{label} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return f"nvpipe {__version__} ({', '.join(parts)})" if parts else f"nvpipe {__version__}"


def add_commands(parser: argparse.ArgumentParser, commands) -> None:
    """``--version`` on ``parser``; the ``export`` and ``weights`` subcommands on ``commands``."""
    parser.add_argument("--version", action="version", version=version_text())

    export = commands.add_parser(
        "export", help="write the network as ONNX or TorchScript",
        description="Write the network as ONNX (the official file's interface: src, r1i..r4i, "
                    "downsample_ratio in; fgr, pha, r1o..r4o out; dynamic sizes and ratio) or "
                    "as TorchScript (torch.jit.script, unfrozen; forward as RVM's).")
    export.add_argument("output", metavar="OUT")
    export.add_argument("--format", choices=("onnx", "torchscript"),
                        help="default: from OUT's suffix (.onnx; .pt/.torchscript)")
    export.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="precision of the weights and tensors (default float32; the "
                             "ONNX ratio input stays float32)")
    export.add_argument("--opset", type=int, default=None, metavar="N",
                        help="ONNX opset, 11..20 (default 17)")
    _weights_options(export)
    export.add_argument("-y", "--overwrite", action="store_true", help="replace OUT")

    weights = commands.add_parser(
        "weights", help="fetch the weights now and print where they are",
        description="Fetch the default weights into the cache unless they are there (or "
                    "NVPIPE_OFFLINE=1: then only report), and print which file nvpipe uses.")
    _weights_options(weights)


def _weights_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", choices=("mobilenetv3", "resnet50"), default="mobilenetv3",
                        help=VARIANT_HELP)
    parser.add_argument("--weights", metavar="PATH", help=".pth or .onnx weights (default: "
                        "$NVPIPE_WEIGHTS, the cache, then the official file)")


def run_command(args: argparse.Namespace) -> int:
    """Run ``export`` or ``weights``; ``NvpipeError`` for anything the user can fix."""
    if args.command == "export":
        return _export(args)
    return _weights(args)


def _export(args: argparse.Namespace) -> int:
    from nvpipe.model.export import DEFAULT_OPSET, export

    format = args.format or SUFFIX_FORMATS.get(Path(args.output).suffix.lower())
    if format is None:
        raise NvpipeError(f"cannot tell the format from {args.output!r}: pass --format onnx "
                          "or --format torchscript")
    if args.opset is not None and format != "onnx":
        raise NvpipeError("--opset applies to --format onnx only")
    path = export(args.output, format=format, variant=args.variant, weights=args.weights,
                  dtype=args.dtype, opset=args.opset or DEFAULT_OPSET, overwrite=args.overwrite)
    print(f"nvpipe: wrote {path} ({format}, {args.variant}, {args.dtype})", file=sys.stderr)
    return 0


def _weights(args: argparse.Namespace) -> int:
    import rvm

    info = rvm.describe_weights(args.variant, args.weights)
    if info.path is not None and info.path.is_dir():
        raise NvpipeError(f"{info.path} is a folder, not a weights file: give a .pth or "
                          f".onnx file")
    if info.origin == "download":  # not there, and downloading is allowed
        try:
            rvm.resolve_weights(args.weights, args.variant)
        except rvm.WeightsError as error:
            raise NvpipeError(str(error)) from None
        info = rvm.describe_weights(args.variant, args.weights)
    if info.path is not None and info.path.is_dir():
        raise NvpipeError(f"{info.path} is a folder, not a weights file: give a .pth or "
                          f".onnx file")
    if info.exists and info.verified is not False:
        # What `nvpipe run` checks: the file loads as this variant (random bytes, a cut
        # .onnx, or resnet50 given MobileNetV3 weights are refused here as there).
        try:
            rvm.load(str(info.path), variant=args.variant)
        except rvm.WeightsError as error:
            raise NvpipeError(f"{info.path} cannot be used: {error}") from None
    print(info)
    if not info.exists or info.verified is False:
        return 1
    return 0
