"""The Triton kernels compile for an H100/H200 (sm_90) on a machine without a GPU, at each
frame size and network ratio the pipeline runs: 1080p/0.25, 4K/0.125 (kernel 1's small
tile is then one row, tl.arange(0, 1)) and 8K/0.0625.

The interpreter the other kernel tests use checks what the kernels compute, not that
Triton's compiler accepts them: bench/kernel_compile.py runs the real compiler and the
ptxas Triton bundles on every variant the pipeline launches, in a subprocess without
TRITON_INTERPRET. Also checked from its report: no register spills, and the tail's
coefficient taps load as vectors (the COEFF_VEC4 hint).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_bench_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kernel_compile.py"


def _nvidia_compiler_missing() -> str:
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.backends.nvidia import compiler  # noqa: F401
    except ImportError as error:
        return f"Triton's NVIDIA backend is not installed ({error})"
    return ""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    missing = _nvidia_compiler_missing()
    if missing:
        pytest.skip(missing)
    folder = tmp_path_factory.mktemp("kernel-compile")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "NVPIPE_TAIL_BLOCK")}
    env["TRITON_CACHE_DIR"] = str(folder / "triton-cache")  # a real compile, not a cache hit
    result = subprocess.run([sys.executable, str(BENCH), "--arch", "90", "--json", str(folder / "report.json")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads((folder / "report.json").read_text())


@pytest.mark.slow  # the module's report compiles every variant: 86 s
def test_every_pipeline_variant_compiles_for_sm90(report):
    bench = load_bench_script("kernel_compile")
    names = set(bench._variants())
    assert not report["failures"]
    assert {row["variant"] for row in report["compiled"]} == names
    assert {name.split()[0] for name in names} == {"1080p/0.25", "4K/0.125", "8K/0.0625"} == set(report["sizes"])
    kernel_1 = [row for row in report["compiled"] if "to_rgb+downsample" in row["variant"]]
    assert len(kernel_1) == 3 * 3
    for row in report["compiled"]:
        assert row["arch"] == 90 and row["cubin_bytes"] > 1000, row
        assert 0 < row["registers"] <= 255, row


@pytest.mark.slow  # the module's report compiles every variant: 86 s
def test_no_register_spills(report):
    spilling = [(row["variant"], row["spill_store_bytes"], row["spill_load_bytes"]) for row in report["compiled"]
                if row["spill_store_bytes"] or row["spill_load_bytes"]]
    assert not spilling


@pytest.mark.slow  # the module's report compiles every variant: 86 s
def test_tail_coefficient_taps_are_vector_loads(report):
    # FP16 channels_last A and b: each tap's 4 channels are one 8-byte load (ld.global.v2.b32);
    # 2-byte scalar loads mean the alignment hint was lost (128 of them a thread at 16x64x8).
    tails = [row for row in report["compiled"] if "tail" in row["kernel"]]
    assert len(tails) >= 10
    for row in tails:
        loads = row["global_accesses"]
        assert loads.get("ld.global.b16", 0) == 0, (row["variant"], loads)
        assert loads.get("ld.global.v2.b32", 0) >= 8, (row["variant"], loads)


def test_refuses_to_run_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, str(BENCH)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "TRITON_INTERPRET" in result.stderr
