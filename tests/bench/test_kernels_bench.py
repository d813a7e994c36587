"""bench/kernels.py's non-GPU parts: byte accounting, argument parsing, its calls (run
under the Triton interpreter at a tiny size), and the no-GPU exit."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TRITON_DEVICE, load_bench_script

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kernels.py"


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("kernels")


@pytest.mark.parametrize("height,width,ratio", [(1080, 1920, 0.25), (45, 61, 0.25), (2160, 3840, 0.125)])
def test_minimum_bytes_equals_the_tensors_a_case_touches(bench, height, width, ratio):
    for kernel in bench.KERNELS:
        # big sizes: the tensors land on the meta device (shapes only, no memory)
        device = torch.device("meta" if height > 100 else "cpu")
        case = bench.make_case(kernel, height, width, ratio, device, seed=0)
        assert bench.tensor_bytes(case.tensors) == bench.minimum_bytes(kernel, height, width, ratio), kernel


def test_minimum_bytes_by_hand(bench):
    # 4K composite tail: A, b at 480x270x4 FP16 (2 x 1,036,800 B), src 3x3840x2160 FP16
    # (49,766,400 B), uint8 RGB out (24,883,200 B).
    assert bench.minimum_bytes("matting_tail", 2160, 3840, 0.125) == 2 * 1_036_800 + 49_766_400 + 24_883_200
    assert bench.nv12_bytes(3, 5) == (3 + 2) * 6


def test_cases_run_and_match_references(bench):
    """Every benchmarked call, at 19x27 (the interpreter, or the GPU), agrees with its reference."""
    for kernel in bench.KERNELS:
        case = bench.make_case(kernel, 19, 27, 0.25, TRITON_DEVICE, seed=1)
        case.run()
        # FP16 RGB outputs: 2**-10 (about one FP16 ulp near 1); uint8 codes: 1 level.
        tolerance = 2.0**-10 if kernel in ("nv12_to_rgb", "p016_to_rgb") else 1.0
        assert case.check() <= tolerance, kernel


def test_arguments(bench):
    args = bench.parse_args(["--sizes", "4k", "--kernels", "matting_tail", "--runs", "5"])
    assert args.sizes == ["4k"] and args.kernels == ["matting_tail"] and args.runs == 5
    with pytest.raises(SystemExit):
        bench.parse_args(["--runs", "0"])
    assert bench.gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert bench.input_sets_for(50 << 20) == 6 and bench.input_sets_for(1) == 24
    assert bench.parse_args(["--tail-blocks", "8,64,8", "16,64,4"]).tail_blocks == ["8,64,8", "16,64,4"]
    for bad in ("8,64", "12,64,8", "8,64,0", "a,b,c", "3,64,8"):
        with pytest.raises(SystemExit):
            bench.parse_args(["--tail-blocks", bad])


def test_table_names_the_tile(bench):
    row = dict(kernel="matting_tail", size="4k", tail_block="8,64,8", median_ms=0.25, bytes=80e6, gbps=320.0,
               fraction_of_copy=0.1, max_abs_error=1.0)
    table = bench.format_table([row, dict(row, kernel="nv12_to_rgb", tail_block=None)], copy_gbps=3200.0)
    assert "8,64,8" in table.splitlines()[2] and " - " in table.splitlines()[3]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_exits_2_without_cuda():
    run = subprocess.run([sys.executable, str(BENCH), "--runs", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "CUDA" in run.stderr
