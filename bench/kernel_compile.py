#!/usr/bin/env python3
"""Compiles every Triton kernel variant the pipeline launches for NVIDIA GPU architectures,
on any machine: no GPU, driver or CUDA toolkit needed (Triton's compiler and its bundled
ptxas do the work). Reports registers, spills and shared memory per variant from
``ptxas -v``, so a change that no longer compiles for a GPU, or that starts spilling, shows
up on a CPU-only machine before it reaches one.

    python bench/kernel_compile.py                     # sm_90 (H100/H200)
    python bench/kernel_compile.py --arch 80 86 89 90  # A100, RTX 30xx, RTX 40xx/L4, H100
    python bench/kernel_compile.py --json bench/results/kernel-compile.json
    python bench/kernel_compile.py --sizes 4K/0.125 --only nv12_to_rgb   # one size, some kernels

The kernels are launched through the public functions of ``nvpipe.kernels`` with CPU tensors
of the pipeline's shapes, dtypes and strides (so Triton specialises them as it would on the
GPU), under a stand-in driver whose target is the requested architecture; each launch is
turned into Triton's ``warmup`` (compile, do not run). Exit status: 0 when every variant
compiled to a cubin, 1 otherwise. Must not run under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

# The frame sizes and network ratios the pipeline runs at (RVM's recommended ratios: 1080p
# 0.25, 4K 0.125; 8K at 0.0625 keeps the same 480x270 network input). Sizes and ratios
# change the specialisations: kernel 1's small tile is ratio x its 8 x 128 tile (2 x 32 at
# 0.25, 1 x 16 at 0.125, 1 x 8 at 0.0625), and Triton specialises integer arguments
# divisible by 16 (2160 and 4320 rows are; 1080 is not).
SIZES = {
    "1080p/0.25": (1080, 1920, 0.25),
    "4K/0.125": (2160, 3840, 0.125),
    "8K/0.0625": (4320, 7680, 0.0625),
}
DEFAULT_SIZES = tuple(SIZES)


@dataclass
class CompiledVariant:
    """One kernel specialisation compiled for one architecture."""

    variant: str           # the call that launched it (see VARIANTS)
    kernel: str            # the @triton.jit function
    arch: int              # compute capability, e.g. 90
    num_warps: int
    registers: int         # per thread, from ptxas -v
    spill_store_bytes: int
    spill_load_bytes: int
    shared_bytes: int      # Triton's dynamic shared memory (layout conversions)
    warps_per_sm: int      # resident warps the register count allows (of 64), see _warps_per_sm
    cubin_bytes: int
    compile_s: float
    global_accesses: dict  # PTX global loads/stores by width, e.g. {"ld.global.v2.b32": 32}


@dataclass
class Failure:
    variant: str
    arch: int
    error: str


@dataclass
class Report:
    triton: str
    torch: str
    archs: list
    sizes: list            # keys of SIZES: "<frame>/<network ratio>"
    compiled: list = field(default_factory=list)
    failures: list = field(default_factory=list)


# ------------------------------------------------------------------ variants


class _Shapes:
    """Input tensors of one frame size as the pipeline hands them to the kernels. Made with
    torch.empty: a compile reads only shapes, strides and alignment (an 8K batch of 4 would
    otherwise touch 0.8 GB)."""

    def __init__(self, height: int, width: int, ratio: float):
        from nvpipe.kernels import small_size

        self.height, self.width, self.ratio = height, width, ratio
        self.low = small_size(height, width, ratio)

    def coefficients(self, batch: int = 0):
        """FP16 channels_last A and b as the network hands them over: [4, h, w] (or [N, 4, h, w])."""
        shape = (max(batch, 1), *self.low, 4)
        a = torch.empty(shape, dtype=torch.float16).permute(0, 3, 1, 2)
        b = torch.empty(shape, dtype=torch.float16).permute(0, 3, 1, 2)
        return (a, b) if batch else (a[0], b[0])

    def src(self, dtype=torch.float16, batch: int = 0):
        shape = (batch, 3, self.height, self.width) if batch else (3, self.height, self.width)
        return torch.empty(shape, dtype=dtype)

    def hwc(self, channels: int) -> torch.Tensor:
        """A uint8 (H, W, C) sink buffer viewed as planes, as nvpipe.engine.compose hands it over."""
        if channels == 1:
            return torch.empty(self.height, self.width, dtype=torch.uint8)[None]
        return torch.empty(self.height, self.width, channels, dtype=torch.uint8).permute(2, 0, 1)

    def nv12(self, dtype=torch.uint8) -> torch.Tensor:
        return torch.empty(self.height + (self.height + 1) // 2, self.width, dtype=dtype)

    def background(self) -> torch.Tensor:
        return torch.empty(3, self.height, self.width, dtype=torch.uint8)  # nvpipe.sources.backgrounds' frames


def _variants(sizes=DEFAULT_SIZES) -> dict[str, Callable[[], object]]:
    """"<size> <call>" -> a call that launches one kernel specialisation (impl="triton"),
    for each size in ``sizes`` (keys of SIZES)."""
    variants = {}
    for size in sizes:
        variants.update({f"{size} {name}": call for name, call in _size_variants(_Shapes(*SIZES[size])).items()})
    return variants


def _size_variants(x: _Shapes) -> dict[str, Callable[[], object]]:
    import nvpipe.kernels as K

    green = (0.0, 0.69, 0.25)
    ratio = x.ratio
    return {
        # Kernel 1: decoder output -> FP16 planar RGB (+ the network's input, fused).
        "nv12_to_rgb+downsample fp16": lambda: K.nv12_to_rgb(x.nv12(), downsample=ratio, impl="triton"),
        "nv12_to_rgb fp16": lambda: K.nv12_to_rgb(x.nv12(), impl="triton"),
        "nv12_to_rgb+downsample fp32": lambda: K.nv12_to_rgb(
            x.nv12(), downsample=ratio, out_dtype=torch.float32, impl="triton"),
        "p016_to_rgb+downsample fp16": lambda: K.p016_to_rgb(
            x.nv12(torch.uint16), downsample=ratio, impl="triton"),
        "p016_to_rgb fp16": lambda: K.p016_to_rgb(x.nv12(torch.uint16), impl="triton"),
        # Kernel 2: the fused tail into each sink layout nvpipe.engine.compose uses.
        "matting_tail composite/colour -> rgb24": lambda: K.matting_tail(
            *x.coefficients(), x.src(), output="composite", background=green, out=x.hwc(3),
            out_dtype=torch.uint8, impl="triton"),
        "matting_tail composite/frame -> rgb24": lambda: K.matting_tail(
            *x.coefficients(), x.src(), output="composite", background=x.background(), out=x.hwc(3),
            out_dtype=torch.uint8, impl="triton"),
        "matting_tail foreground -> rgb24": lambda: K.matting_tail(
            *x.coefficients(), x.src(), output="foreground", out=x.hwc(3), out_dtype=torch.uint8,
            impl="triton"),
        "matting_tail alpha -> gray": lambda: K.matting_tail(
            *x.coefficients(), x.src(), output="alpha", out=x.hwc(1), out_dtype=torch.uint8, impl="triton"),
        "matting_tail rgba -> rgba": lambda: K.matting_tail(
            *x.coefficients(), x.src(), output="rgba", out=x.hwc(4), out_dtype=torch.uint8, impl="triton"),
        "matting_tail rgba_premultiplied -> rgba": lambda: K.matting_tail(
            *x.coefficients(), x.src(), output="rgba_premultiplied", out=x.hwc(4), out_dtype=torch.uint8,
            impl="triton"),
        "matting_tail rgba fp16 (MattingSession)": lambda: K.matting_tail(
            *x.coefficients(), x.src(), output="rgba", out_dtype=torch.float16, impl="triton"),
        "matting_tail composite batch of 4 (gpu_bench)": lambda: K.matting_tail(
            *x.coefficients(batch=4), x.src(batch=4), output="composite", background=green,
            out_dtype=torch.uint8, impl="triton"),
        # Kernel 3 and kernels 2 + 3 fused: NV12 for an encoder.
        "rgb_to_nv12 fp16": lambda: K.rgb_to_nv12(x.src(), impl="triton"),
        "rgb_to_nv12 uint8": lambda: K.rgb_to_nv12(x.hwc(3), impl="triton"),
        "alpha_to_nv12 fp16": lambda: K.alpha_to_nv12(x.src()[:1], impl="triton"),
        "matting_tail_nv12 composite/colour": lambda: K.matting_tail_nv12(
            *x.coefficients(), x.src(), output="composite", background=green, impl="triton"),
        "matting_tail_nv12 composite/frame": lambda: K.matting_tail_nv12(
            *x.coefficients(), x.src(), output="composite", background=x.background(), impl="triton"),
        "matting_tail_nv12 foreground": lambda: K.matting_tail_nv12(
            *x.coefficients(), x.src(), output="foreground", impl="triton"),
        "matting_tail_nv12 alpha": lambda: K.matting_tail_nv12(
            *x.coefficients(), x.src(), output="alpha", impl="triton"),
    }


# ------------------------------------------------------------------ compiling without a GPU


class _TargetOnlyDriver:
    """The part of Triton's driver interface a compile needs: the target. Never launches."""

    def __init__(self, target):
        self.target = target

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return self.target.arch  # one kernel cache per architecture

    def get_current_stream(self, device=None):
        return 0

    def is_active(self):
        return True


def _ptxas(arch: int) -> str:
    """The ptxas Triton itself uses for ``arch`` (Triton 3.9 bundles CUDA 12.9's and 13.x's)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(arch).path
    except ImportError:  # older Triton: one bundled ptxas
        from triton import knobs

        return knobs.nvidia.ptxas.path


def _ptxas_usage(ptx: str, arch: int) -> dict:
    """Registers, spills and shared memory of a kernel, from ``ptxas -v``."""
    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder, "kernel.ptx")
        source.write_text(ptx)
        result = subprocess.run([_ptxas(arch), f"-arch=sm_{arch}{suffix}", "-v", str(source), "-o",
                                 str(Path(folder, "kernel.cubin"))], capture_output=True, text=True)
    text = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"ptxas failed: {text.strip().splitlines()[-1:]}")

    def number(pattern: str) -> int:
        match = re.search(pattern, text)
        return int(match.group(1)) if match else 0

    return {
        "registers": number(r"Used (\d+) registers"),
        "spill_store_bytes": number(r"(\d+) bytes spill stores"),
        "spill_load_bytes": number(r"(\d+) bytes spill loads"),
    }


def _global_accesses(ptx: str) -> dict:
    """Global memory instructions in the PTX by kind and width (one thread's view)."""
    counts: dict = {}
    for instruction in re.findall(r"\b((?:ld|st)\.global[.\w]*)", ptx):
        counts[instruction] = counts.get(instruction, 0) + 1
    return dict(sorted(counts.items()))


def _warps_per_sm(registers: int, warps: int, shared: int) -> int:
    """Warps one SM can hold for this kernel (sm_80-sm_90: 64K registers, 64 warps, 32 blocks,
    228 KB shared), registers allocated per warp in units of 256."""
    per_warp = -(-registers * 32 // 256) * 256
    blocks = min(65536 // max(per_warp * warps, 1), 64 // warps, 32)
    if shared:
        blocks = min(blocks, 228 * 1024 // shared)
    return blocks * warps


def compile_all(archs: list[int], only: list[str] | None = None, sizes=DEFAULT_SIZES) -> Report:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    import nvpipe.kernels  # noqa: F401 - loaded before its modules' dispatch is patched below

    report = Report(triton=triton.__version__, torch=torch.__version__, archs=archs, sizes=list(sizes))
    launched: list = []
    original_run = JITFunction.run
    original_driver = getattr(driver, "_active", None)  # None on a machine without a GPU

    def compile_only(self, *args, grid, warmup, **kwargs):
        start = time.perf_counter()
        kernel = original_run(self, *args, grid=grid, warmup=True, **kwargs)
        launched.append((self.fn.__name__, kernel, kwargs.get("num_warps", 4), time.perf_counter() - start))
        return kernel

    JITFunction.run = compile_only
    # CPU tensors stand in for CUDA ones: every public function takes its Triton branch.
    modules = [sys.modules[name] for name in list(sys.modules)
               if name.startswith("nvpipe.kernels") and hasattr(sys.modules[name], "choose_implementation")]
    originals = {module: module.choose_implementation for module in modules}
    for module in modules:
        module.choose_implementation = lambda impl, tensor, native_unfit: "triton"
    try:
        variants = _variants(sizes)
        for arch in archs:
            driver.set_active(_TargetOnlyDriver(GPUTarget("cuda", arch, 32)))
            for name, call in variants.items():
                if only and not any(part in name for part in only):
                    continue
                launched.clear()
                try:
                    call()
                    if not launched:
                        raise RuntimeError("no Triton kernel was launched")
                    for kernel_name, kernel, warps, seconds in launched:
                        usage = _ptxas_usage(kernel.asm["ptx"], arch)
                        shared = int(kernel.metadata.shared)
                        report.compiled.append(CompiledVariant(
                            variant=name, kernel=kernel_name, arch=arch, num_warps=warps,
                            shared_bytes=shared, warps_per_sm=_warps_per_sm(usage["registers"], warps, shared),
                            cubin_bytes=len(kernel.asm["cubin"]), compile_s=round(seconds, 2),
                            global_accesses=_global_accesses(kernel.asm["ptx"]), **usage))
                except Exception as error:  # noqa: BLE001 - reported, the others go on
                    message = str(error).strip().splitlines()
                    report.failures.append(Failure(name, arch, f"{type(error).__name__}: "
                                                               f"{message[-1] if message else ''}"))
    finally:
        JITFunction.run = original_run
        for module in modules:
            module.choose_implementation = originals[module]
        driver._active = original_driver
    return report


def _print(report: Report) -> None:
    print(f"triton {report.triton}, torch {report.torch}; sizes {', '.join(report.sizes)}")
    header = f"{'arch':>5} {'variant':<56} {'kernel':<28} {'warps':>5} {'regs':>5} {'spill':>6} {'smem':>6} {'warps/SM':>8} {'s':>5}"
    print(header)
    for row in report.compiled:
        spill = row.spill_store_bytes + row.spill_load_bytes
        print(f"sm_{row.arch:<2} {row.variant:<56} {row.kernel:<28} {row.num_warps:>5} {row.registers:>5} "
              f"{spill:>6} {row.shared_bytes:>6} {row.warps_per_sm:>8} {row.compile_s:>5.1f}")
    for failure in report.failures:
        print(f"FAILED sm_{failure.arch} {failure.variant}: {failure.error}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90],
                        help="compute capabilities (80 A100, 86 RTX 30xx, 89 RTX 40xx/L4, 90 H100/H200)")
    parser.add_argument("--only", nargs="+", help="variants whose name contains one of these")
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), choices=list(SIZES),
                        help="frame size / network ratio pairs (default: all)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("kernel_compile: unset TRITON_INTERPRET (the interpreter compiles nothing)", file=sys.stderr)
        return 2
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except ImportError as error:
        print(f"kernel_compile: needs triton ({error})", file=sys.stderr)
        return 2
    report = compile_all(args.arch, args.only, args.sizes)
    _print(report)
    if args.json:
        payload = asdict(report)
        payload["command"] = " ".join(["python", "bench/kernel_compile.py", *(argv or sys.argv[1:])])
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 1 if report.failures or not report.compiled else 0


if __name__ == "__main__":
    sys.exit(main())
