"""bench/gpu_bench.py: what runs without a GPU (clip generation, the no-GPU exit)."""

import sys
from pathlib import Path

import av
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import gpu_bench  # noqa: E402


def test_generated_clip_has_every_frame_at_its_size(tmp_path):
    path = gpu_bench.generate_clip(str(tmp_path / "g.mp4"), 96, 64, frames=9, fps=24)
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    assert (stream.width, stream.height, stream.codec_context.name) == (96, 64, "h264")
    assert len(frames) == 9
    assert stream.average_rate == 24
    # A moving pattern: consecutive frames differ.
    first, second = (f.to_ndarray(format="rgb24").astype(int) for f in frames[:2])
    assert abs(first - second).mean() > 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_main_exits_2_without_gpu(tmp_path, capsys):
    assert gpu_bench.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_throughput_cuda_command_line_reaches_the_gpu_bench(tmp_path, capsys):
    # bench/throughput.py --device cuda hands its own argv (positional clip, --repeats,
    # --network-frames, an int --jobs) to gpu_bench.main: an argparse error would raise
    # SystemExit instead of returning the no-GPU status.
    from bench import throughput

    for jobs in ("2", "1,2,4,7"):
        argv = ["--device", "cuda", str(tmp_path / "clip.mp4"), "--repeats", "1",
                "--network-frames", "4", "--jobs", jobs, "--ratio", "0.25", "--out", str(tmp_path)]
        assert throughput.main(argv) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_targets_from_measurements():
    """Issue 4's targets: null-sink end to end >= 90% of min(FP16 graphs, decode), FP16
    graphs >= 3x FP32 eager, 4K memory < 2 GiB."""
    run = {"network": {"fp32_eager_fps": 40.0, "fp16_graph_fps": {1: 150.0, 2: 170.0}},
           "decode": {"fps": 120.0}, "end_to_end_null": {"fps": 110.0, "chunk": 1},
           "memory": {"nvml_used_mib": 1900.0}}
    got = gpu_bench.targets(run)
    assert got["null_sink_vs_bound"]["value"] == round(110 / 120, 3) and got["null_sink_vs_bound"]["met"]
    assert got["fp16_graphs_vs_fp32_eager"]["value"] == 3.75 and got["fp16_graphs_vs_fp32_eager"]["met"]
    assert got["memory_mib"]["met"]
    run["end_to_end_null"]["fps"], run["memory"]["nvml_used_mib"] = 100.0, 2100.0
    run["network"]["fp32_eager_fps"] = 60.0
    got = gpu_bench.targets(run)
    assert not any(row["met"] for row in got.values())
    del run["memory"]
    assert "memory_mib" not in gpu_bench.targets(run)


def test_clip_given_twice_differently_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        gpu_bench.main([str(tmp_path / "a.mp4"), "--clip", str(tmp_path / "b.mp4")])


def test_summary_rows_show_each_failed_stage_and_keep_the_rest():
    run = {"network": {"fp32_eager_fps": 40.0, "fp16_graph_fps": {1: 150.0}, "speedup_vs_fp32": 3.75},
           "decode": {"error": "RuntimeError: no NVDEC"}, "decode_jobs": [{"jobs": 2, "aggregate_fps": 210.0}],
           "end_to_end_null": {"fps": 110.0, "wall_fps": 90.0, "chunk": 1},
           "end_to_end": {"error": "OutputError: disk full"}, "targets": {"error": "KeyError: 'fps'"}}
    rows = dict(gpu_bench.summary_rows("4k", run))
    assert rows["4k network FP16 graphs"] == "T=1: 150.0 fps (3.75x FP32)"
    assert rows["4k decode NVDEC+convert"] == "not measured RuntimeError: no NVDEC"
    assert rows["4k decode NVDEC only"] == "not measured"
    assert rows["4k nvpipe run end to end"] == "not measured OutputError: disk full"
    assert rows["4k nvpipe run to a null sink"] == "110.0 fps steady (90.0 wall)"
    assert rows["4k targets"] == "not measured KeyError: 'fps'"
