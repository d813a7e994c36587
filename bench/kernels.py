#!/usr/bin/env python3
"""Benchmark of the Triton kernels (nvpipe.kernels) at 1080p and 4K on a CUDA GPU.

For each kernel: the median of many runs timed with CUDA events, rotating among several
input sets so the 50 MB L2 cache of an H100 cannot hold them all; the minimum bytes the
kernel must move (every input read once, every output written once); the achieved GB/s;
and that as a percentage of the device-to-device copy bandwidth measured in the same run
(bytes read + written by a large ``copy_``). Target: the fused tail at 4K >= 70% of copy.

    python bench/kernels.py                      # both sizes, all kernels
    python bench/kernels.py --sizes 4k --runs 300 --kernels matting_tail matting_tail_nv12
    python bench/kernels.py --sizes 4k --tail-blocks 8,64,8 16,64,8 16,64,4 32,64,8   # tile sweep

Writes bench/results/kernels-<gpu>.json (GPU, driver, versions, command line, rows).
Without CUDA it prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

SIZES = {"1080p": (1080, 1920), "4k": (2160, 3840)}
# The network's input ratio RVM recommends per size (its README: 0.25 up to 1080p, 0.125 at 4K).
RATIOS = {"1080p": 0.25, "4k": 0.125}
KERNELS = (
    "nv12_to_rgb",         # NV12 -> FP16 planar RGB + the network's FP16 downsample
    "p016_to_rgb",         # P016 -> FP16 planar RGB + downsample
    "matting_tail",        # FP16 A, b (channels_last) + FP16 src -> composite, uint8 HWC RGB
    "matting_tail_rgba",   # the same -> straight RGBA, uint8 HWC
    "rgb_to_nv12",         # FP16 planar RGB -> NV12
    "alpha_to_nv12",       # FP16 alpha -> grey NV12
    "matting_tail_nv12",   # fused tail + composite + NV12: what an NVENC sink takes
)
TARGET_KERNELS = ("matting_tail", "matting_tail_nv12")
TAIL_KERNELS = ("matting_tail", "matting_tail_rgba", "matting_tail_nv12")  # tiled by tail_block_shape()
TARGET_FRACTION = 0.70
RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------ byte accounting


def nv12_bytes(height: int, width: int, sample_bytes: int = 1) -> int:
    """Bytes of a tightly packed 4:2:0 frame (H + ceil(H/2), 2*ceil(W/2))."""
    return (height + (height + 1) // 2) * 2 * ((width + 1) // 2) * sample_bytes


def minimum_bytes(kernel: str, height: int, width: int, ratio: float) -> int:
    """Bytes ``kernel`` must move at H x W: inputs read once + outputs written once.

    FP16 everywhere the pipeline uses FP16 (src, rgb, coefficients), uint8 for encoder
    frames; coefficients are ``[4, *small_size(H, W, r)]`` each (A and b).
    """
    from nvpipe.kernels import small_size

    pixels = height * width
    small = math.prod(small_size(height, width, ratio))
    coefficients = 2 * 4 * small * 2  # A and b, 4 channels, FP16
    if kernel == "nv12_to_rgb":
        return nv12_bytes(height, width) + 3 * pixels * 2 + 3 * small * 2
    if kernel == "p016_to_rgb":
        return nv12_bytes(height, width, 2) + 3 * pixels * 2 + 3 * small * 2
    if kernel == "matting_tail":
        return coefficients + 3 * pixels * 2 + 3 * pixels
    if kernel == "matting_tail_rgba":
        return coefficients + 3 * pixels * 2 + 4 * pixels
    if kernel == "rgb_to_nv12":
        return 3 * pixels * 2 + nv12_bytes(height, width)
    if kernel == "alpha_to_nv12":
        return pixels * 2 + nv12_bytes(height, width)
    if kernel == "matting_tail_nv12":
        return coefficients + 3 * pixels * 2 + nv12_bytes(height, width)
    raise ValueError(f"unknown kernel {kernel!r}")


@dataclass
class Case:
    """One kernel call on one input set: ``run()`` launches it; ``tensors`` are every
    input and output it touches (for the byte count); ``check()`` compares with the reference."""

    run: Callable[[], object]
    tensors: tuple
    check: Callable[[], float]


def make_case(kernel: str, height: int, width: int, ratio: float, device, seed: int) -> Case:
    """Inputs and preallocated outputs for ``kernel``, random but valid, on ``device``."""
    import nvpipe.kernels as K

    g = torch.Generator(device="cpu").manual_seed(seed)
    low_h, low_w = K.small_size(height, width, ratio)

    def rand(*shape, dtype=torch.float16):
        return torch.rand(*shape, generator=g).to(device=device, dtype=dtype)

    def coefficients():
        # channels_last network outputs: [1, 4, h, w] with channel stride 1, viewed as [4, h, w].
        a = (torch.randn(1, low_h, low_w, 4, generator=g) * 0.5).to(device, torch.float16).permute(0, 3, 1, 2)[0]
        b = (torch.randn(1, low_h, low_w, 4, generator=g) * 0.2).to(device, torch.float16).permute(0, 3, 1, 2)[0]
        return a, b

    def max_diff(x, y) -> float:
        return (x.float() - y.float()).abs().max().item()

    def nv12_diff(x, y) -> float:  # the defined samples only (an odd width pads each luma row)
        luma = max_diff(x[:height, :width], y[:height, :width])
        return max(luma, max_diff(x[height:], y[height:]))

    if kernel in ("nv12_to_rgb", "p016_to_rgb"):
        rows, pitch = height + (height + 1) // 2, 2 * ((width + 1) // 2)
        if kernel == "nv12_to_rgb":
            frame = torch.randint(0, 256, (rows, pitch), generator=g, dtype=torch.uint8).to(device)
            convert, reference = K.nv12_to_rgb, K.nv12_to_rgb_reference
        else:
            codes = torch.randint(0, 1024, (rows, pitch), generator=g, dtype=torch.int32) << 6
            frame = codes.to(torch.uint16).to(device)
            convert, reference = K.p016_to_rgb, K.p016_to_rgb_reference
        rgb = torch.empty(3, height, width, dtype=torch.float16, device=device)
        small = torch.empty(3, low_h, low_w, dtype=torch.float16, device=device)
        kwargs = dict(matrix="bt709", full_range=False, out_dtype=torch.float16, downsample=ratio, width=width)
        return Case(
            run=lambda: convert(frame, out=rgb, out_small=small, impl="triton", **kwargs),
            tensors=(frame, rgb, small),
            check=lambda: max(max_diff(x, y) for x, y in zip((rgb, small), reference(frame, **kwargs))),
        )
    if kernel in ("matting_tail", "matting_tail_rgba"):
        a, b = coefficients()
        src = rand(3, height, width)
        output = "composite" if kernel == "matting_tail" else "rgba"
        channels = 3 if output == "composite" else 4
        hwc = torch.empty(height, width, channels, dtype=torch.uint8, device=device)
        kwargs = dict(output=output, background=(0.0, 0.69, 0.25) if output == "composite" else None)
        return Case(
            run=lambda: K.matting_tail(a, b, src, out=hwc.permute(2, 0, 1), impl="triton", **kwargs),
            tensors=(a, b, src, hwc),
            check=lambda: max_diff(hwc.permute(2, 0, 1),
                                   K.matting_tail_reference(a, b, src, out_dtype=torch.uint8, **kwargs)),
        )
    if kernel in ("rgb_to_nv12", "alpha_to_nv12"):
        planes = rand(3 if kernel == "rgb_to_nv12" else 1, height, width)
        nv12 = torch.empty(height + (height + 1) // 2, 2 * ((width + 1) // 2), dtype=torch.uint8, device=device)
        convert = K.rgb_to_nv12 if kernel == "rgb_to_nv12" else K.alpha_to_nv12
        reference = K.rgb_to_nv12_reference if kernel == "rgb_to_nv12" else K.alpha_to_nv12_reference
        return Case(
            run=lambda: convert(planes, out=nv12, impl="triton"),
            tensors=(planes, nv12),
            check=lambda: nv12_diff(nv12, reference(planes)),
        )
    if kernel == "matting_tail_nv12":
        a, b = coefficients()
        src = rand(3, height, width)
        nv12 = torch.empty(height + (height + 1) // 2, 2 * ((width + 1) // 2), dtype=torch.uint8, device=device)
        kwargs = dict(output="composite", background=(0.0, 0.69, 0.25), matrix="bt709", full_range=False)
        return Case(
            run=lambda: K.matting_tail_nv12(a, b, src, out=nv12, impl="triton", **kwargs),
            tensors=(a, b, src, nv12),
            check=lambda: nv12_diff(nv12, K.matting_tail_nv12_reference(a, b, src, **kwargs)),
        )
    raise ValueError(f"unknown kernel {kernel!r}")


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ------------------------------------------------------------------------ timing


def _busy_wait():
    # Keeps the GPU busy (~0.5 ms at 2 GHz) while Python enqueues the timed call, so the
    # events time the kernel, not the host's launch overhead.
    torch.cuda._sleep(1_000_000)


def time_cases(cases: list[Case], runs: int, warmup: int) -> list[float]:
    """Milliseconds of ``runs`` calls, rotating through ``cases``; warmup calls first
    (the first one compiles the Triton kernel)."""
    for i in range(warmup):
        cases[i % len(cases)].run()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    for i in range(runs):
        _busy_wait()
        starts[i].record()
        cases[i % len(cases)].run()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def copy_bandwidth(device, megabytes: int, runs: int) -> tuple[float, float]:
    """(GB/s, ms) of device-to-device ``copy_`` of ``megabytes``, counting read + write."""
    count = megabytes * (1 << 20)
    source = torch.empty(count, dtype=torch.uint8, device=device).random_()
    destination = torch.empty_like(source)
    case = Case(run=lambda: destination.copy_(source), tensors=(source, destination), check=lambda: 0.0)
    ms = statistics.median(time_cases([case], runs, warmup=5))
    return 2 * count / (ms * 1e-3) / 1e9, ms


def input_sets_for(bytes_per_set: int, minimum_total: int = 256 << 20, at_least: int = 3, at_most: int = 24) -> int:
    """How many input sets to rotate through: together at least ``minimum_total`` bytes
    (5x an H100's 50 MB L2) so a run rarely finds its inputs cached."""
    return max(at_least, min(at_most, math.ceil(minimum_total / max(bytes_per_set, 1))))


# ---------------------------------------------------------------------- reporting


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark nvpipe.kernels on a CUDA GPU.")
    parser.add_argument("--sizes", nargs="+", choices=tuple(SIZES), default=list(SIZES))
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    parser.add_argument("--runs", type=int, default=200, help="timed calls per kernel and size (median reported)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--copy-mb", type=int, default=1024, help="buffer size of the copy-bandwidth measurement")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with the references")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/kernels-<gpu>.json)")
    parser.add_argument("--tail-blocks", nargs="+", default=None, metavar="H,W,WARPS",
                        help="also time the tail kernels with these tiles (NVPIPE_TAIL_BLOCK), e.g. "
                             "8,64,8 16,64,8 16,64,4; bench/kernel_compile.py shows their registers")
    args = parser.parse_args(argv)
    for block in args.tail_blocks or ():
        parts = block.split(",")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts) \
                or any(int(p) & (int(p) - 1) for p in parts) or int(parts[0]) % 2 or int(parts[1]) % 2:
            parser.error(f"--tail-blocks takes H,W,WARPS powers of two (H, W even), got {block!r}")
    if args.runs < 1 or args.warmup < 1 or args.copy_mb < 1:
        parser.error("--runs, --warmup and --copy-mb must be positive")
    return args


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (for the results file name)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - NVML is optional; the JSON says unknown
        return "unknown"


def format_table(rows: list[dict], copy_gbps: float) -> str:
    lines = [f"device-to-device copy: {copy_gbps:.0f} GB/s (read + write)",
             f"{'kernel':<20} {'size':<6} {'tile':<8} {'ms':>8} {'MB':>8} {'GB/s':>8} {'% copy':>7} {'max err':>8}"]
    for row in rows:
        lines.append(f"{row['kernel']:<20} {row['size']:<6} {row.get('tail_block') or '-':<8} {row['median_ms']:>8.4f} {row['bytes'] / 1e6:>8.1f} "
                     f"{row['gbps']:>8.0f} {100 * row['fraction_of_copy']:>6.1f}% {row['max_abs_error']:>8.4g}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/kernels.py: no CUDA device; this benchmark needs a GPU", file=sys.stderr)
        return 2
    import triton

    from nvpipe.kernels.tail import tail_block_shape

    device = torch.device("cuda")
    properties = torch.cuda.get_device_properties(device)
    copy_gbps, copy_ms = copy_bandwidth(device, args.copy_mb, runs=max(20, args.runs // 4))
    rows = []
    default_block = ",".join(map(str, tail_block_shape()))
    runs = [(kernel, None) for kernel in args.kernels]
    runs += [(kernel, block) for block in args.tail_blocks or () if block != default_block
             for kernel in args.kernels if kernel in TAIL_KERNELS]
    for size in args.sizes:
        height, width = SIZES[size]
        ratio = RATIOS[size]
        for kernel, block in runs:
            if block is None:
                os.environ.pop("NVPIPE_TAIL_BLOCK", None)
            else:
                os.environ["NVPIPE_TAIL_BLOCK"] = block
            probe = make_case(kernel, height, width, ratio, device, seed=0)
            moved = minimum_bytes(kernel, height, width, ratio)
            assert tensor_bytes(probe.tensors) == moved, (kernel, tensor_bytes(probe.tensors), moved)
            sets = input_sets_for(moved)
            cases = [probe] + [make_case(kernel, height, width, ratio, device, seed=s) for s in range(1, sets)]
            times = time_cases(cases, args.runs, args.warmup)
            error = float("nan") if args.no_check else max(case.check() for case in cases[:2])
            median = statistics.median(times)
            gbps = moved / (median * 1e-3) / 1e9
            tile = ",".join(map(str, tail_block_shape())) if kernel in TAIL_KERNELS else None
            rows.append(dict(kernel=kernel, size=size, tail_block=tile, height=height, width=width, ratio=ratio,
                             input_sets=sets,
                             runs=args.runs, median_ms=median, min_ms=min(times), bytes=moved, gbps=gbps,
                             fraction_of_copy=gbps / copy_gbps, max_abs_error=error))
            del cases, probe
            torch.cuda.empty_cache()
    os.environ.pop("NVPIPE_TAIL_BLOCK", None)
    print(format_table(rows, copy_gbps))
    targets = {}
    for row in rows:
        if row["size"] == "4k" and row["kernel"] in TARGET_KERNELS and row["tail_block"] == default_block:
            met = row["fraction_of_copy"] >= TARGET_FRACTION
            targets[row["kernel"]] = met
            print(f"target {row['kernel']} 4K >= {TARGET_FRACTION:.0%} of copy: "
                  f"{row['fraction_of_copy']:.1%} -> {'met' if met else 'NOT met'}")
    result = dict(
        gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
        driver=driver_version(), cuda=torch.version.cuda, torch=torch.__version__, triton=triton.__version__,
        python=platform.python_version(), command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        copy_gbps=copy_gbps, copy_ms=copy_ms, copy_megabytes=args.copy_mb,
        tail_block=list(tail_block_shape()), target_fraction=TARGET_FRACTION, targets_met=targets, rows=rows,
    )
    path = args.output or RESULTS / f"kernels-{gpu_slug(properties.name)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
