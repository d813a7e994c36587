"""bench/gpu_bench.py: what runs without a GPU (clip generation, the no-GPU exit)."""

import sys
from pathlib import Path

import av
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
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
def test_throughput_on_cuda_without_gpu_exits_2(tmp_path, capsys):
    from bench import throughput

    argv = ["--device", "cuda", "--sizes", "360p,4k", "--pairs", "1", "--out", str(tmp_path)]
    assert throughput.main(argv) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_throughput_refuses_unknown_sizes(tmp_path):
    from bench import throughput

    with pytest.raises(SystemExit):
        throughput.main(["--sizes", "8k", "--out", str(tmp_path)])


def test_throughput_clip_is_real_footage_looped_and_scaled(tmp_path, footage):
    from bench import throughput

    source = footage("person_fullbody_360x640.mp4")
    with av.open(str(source)) as container:
        source_frames = sum(1 for _ in container.decode(video=0))
    wanted = source_frames + 3  # past the end: the clip loops from its start
    path = throughput.make_clip(str(source), str(tmp_path / "c.mp4"), 64, 36, wanted)
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="gray") for f in container.decode(stream)]
    assert (stream.width, stream.height, len(frames)) == (64, 36, wanted)
    # The looped frame is the first one again (not a gradient, not black).
    assert abs(frames[source_frames].astype(int) - frames[0].astype(int)).mean() < 6
    assert abs(frames[1].astype(int) - frames[source_frames // 2].astype(int)).mean() > 1


def test_throughput_plot_draws_every_size(tmp_path):
    pytest.importorskip("matplotlib")
    from bench import throughput

    report = {"device": "cpu", "clip": "c.mp4", "pairs": 1, "load_before": [0.1, 0.1, 0.1],
              "machine": {"cpu": "test CPU", "cores": 2, "gpu": None}, "sizes": {}}
    for index, (name, (width, height, ratio)) in enumerate(throughput.SIZES.items()):
        stages = {stage: {"ms_per_frame": 10.0 * (index + 1)} for stage in throughput.STAGES}
        report["sizes"][name] = {
            "width": width, "height": height, "ratio": ratio, "frames": 10,
            "end_to_end": {"nvpipe": {"fps": 3.0}, "plain_loop": {"fps": 2.0},
                           "median_pair_ratio": 1.5,
                           "profile": {"profile": {"stages": stages}}}}
    report["sizes"]["4k"]["end_to_end"] = {"error": "RuntimeError: out of memory"}  # a failed size
    target = throughput.plot(report, str(tmp_path / "p.png"))
    from PIL import Image

    with Image.open(target) as image:
        assert image.size[0] > 800 and image.size[1] > 400


def test_throughput_pairs_summary():
    from bench import throughput

    runs = {"plain_loop": [{"fps": 2.0, "cores_busy": 1.0}, {"fps": 1.0, "cores_busy": 0.9},
                           {"error": "x"}],
            "nvpipe": [{"fps": 3.0, "cores_busy": 1.8}, {"fps": 2.0, "cores_busy": 1.7},
                       {"fps": 4.0, "cores_busy": 1.9}]}
    summary = throughput.summarise_pairs(runs)
    assert summary["plain_loop"]["fps"] == 1.5 and summary["nvpipe"]["fps"] == 3.0
    assert summary["pair_ratios"] == [1.5, 2.0]  # the failed plain run drops its pair
    assert summary["median_pair_ratio"] == 1.75 and summary["nvpipe_over_plain"] == 2.0
    assert summary["nvpipe"]["cores_busy"] == 1.8


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


# --------------------------------------------------------------------------- the one device call

SESSION = Path(__file__).resolve().parents[2] / "bench" / "gpu_session.sh"
SESSION_STEPS = ["setup", "facts", "ctxleak", "context", "context-tests", "nvdec", "nvdec-tests",
                 "clips", "network", "decode", "end_to_end", "x264", "fidelity"]


def _session(tmp_path, python_body: str, seconds: int):
    """gpu_session.sh with a stand-in python (``python_body`` is its bash), a budget of
    ``seconds``; returns the rows of steps.tsv by step name."""
    import os
    import subprocess

    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\n" + python_body + "\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=str(fake), SESSION_SECONDS=str(seconds),
               NVPIPE_SHARED=str(tmp_path / "no-shared"), CARRY=str(tmp_path / "no-carry"))
    done = subprocess.run(["bash", str(SESSION)], env=env, capture_output=True, text=True,
                          timeout=seconds + 30)
    assert done.returncode == 0, done.stderr
    lines = (out / "steps.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["step", "exit", "seconds"]
    return out, {line.split("\t")[0]: line.split("\t") for line in lines[1:]}


def test_session_runs_every_step_and_records_each_failure(tmp_path):
    out, rows = _session(tmp_path, 'echo "stand-in python: $*"; echo "no CUDA GPU here" >&2; exit 2', 120)
    assert list(rows) == SESSION_STEPS
    for name in SESSION_STEPS:
        assert (out / f"{name}.log").exists(), name
    assert rows["setup"][1] != "0" and "no-carry/ (run bash bench/gpu_prepare.sh" in rows["setup"][3]
    for name in ("context", "network", "decode", "end_to_end", "fidelity"):
        assert rows[name][1] == "2" and rows[name][3] == "no CUDA GPU here", name
    assert (out / "session.log").read_text().count("===") >= 2 * len(SESSION_STEPS)


def test_session_keeps_to_its_budget(tmp_path):
    """A step that overruns what is left is cut at the budget; the later ones are skipped."""
    started = __import__("time").perf_counter()
    out, rows = _session(tmp_path, "sleep 30", 8)
    assert __import__("time").perf_counter() - started < 25
    assert rows["facts"][1] in ("124", "137") and "timed out" in (out / "facts.log").read_text()
    assert all(rows[name][1] == "skipped" for name in SESSION_STEPS[3:])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
@pytest.mark.parametrize("step", ["context", "nvdec", "network", "decode", "end_to_end", "fidelity"])
def test_gpu_check_steps_write_their_one_line_reason(step, tmp_path, capsys):
    from bench import gpu_checks

    assert gpu_checks.main([step, "--out", str(tmp_path)]) == 2
    import json

    written = json.loads((tmp_path / f"{step}.json").read_text())
    assert written["error"].startswith("no CUDA GPU") and "\n" not in written["error"]
    assert "no CUDA GPU" in capsys.readouterr().err
