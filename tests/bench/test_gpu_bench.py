"""bench/gpu_bench.py: what runs without a GPU (clip generation, the no-GPU exit)."""

import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import gpu_bench  # noqa: E402


def test_generated_clip_has_every_frame_at_its_size(tmp_path):
    path = gpu_bench.generate_clip(str(tmp_path / "g.mp4"), 96, 64, frames=9, fps=24)
    with av.open(path) as container:  # PyAV 18.1.1: a stream's fields only while it is open
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        size_codec = (stream.width, stream.height, stream.codec_context.name)
        rate = stream.average_rate
    assert size_codec == (96, 64, "h264")
    assert len(frames) == 9
    assert rate == 24
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
SESSION_STEPS = ["setup", "facts", "ctxleak", "context", "nvdec-race", "context-tests", "nvdec",
                 "nvdec-tests", "clips", "network", "decode", "end_to_end", "x264", "fidelity",
                 "pipeline-tests", "subject"]
# What the device brings back from $OUT: at most 8 files (../.library/device/README.md).
DEVICE_MAX_FILES = 8


def _session(tmp_path, python_body: str, *args: str, timeout: int = 120):
    """gpu_session.sh with a stand-in python (``python_body`` is its bash) and ``args``;
    returns ``(out folder, rows of steps.tsv by step name, the archive's names)``."""
    import os
    import subprocess
    import tarfile

    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\n" + python_body + "\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=str(fake), WORK=str(tmp_path / "work"),
               NVPIPE_SHARED=str(tmp_path / "no-shared"), CARRY=str(tmp_path / "no-carry"))
    env.pop("SESSION_SECONDS", None)
    done = subprocess.run(["bash", str(SESSION), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    lines = (out / "steps.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:4] == ["step", "exit", "seconds", "limit"]
    with tarfile.open(out / "results.tgz") as archive:
        names = {Path(name).name for name in archive.getnames()}
    return out, {line.split("\t")[0]: line.split("\t") for line in lines[1:]}, names, done.stdout


def test_session_brings_back_every_step_in_at_most_four_files(tmp_path):
    out, rows, archived, stdout = _session(
        tmp_path, 'echo "stand-in python: $*"; echo "no CUDA GPU here" >&2; exit 2', "--budget", "120")
    assert list(rows) == SESSION_STEPS
    assert sorted(p.name for p in out.iterdir()) == ["results.tgz", "steps.tsv", "summary.txt"]
    assert len(list(out.iterdir())) <= min(4, DEVICE_MAX_FILES)
    for name in SESSION_STEPS:  # every step's log is in the archive, none loose in $OUT
        assert f"{name}.log" in archived, name
    assert {"session.log", "summary.txt", "steps.tsv"} <= archived
    assert rows["setup"][1] != "0" and "no-carry/ (run bash bench/gpu_prepare.sh" in rows["setup"][4]
    for name in ("context", "network", "decode", "end_to_end", "fidelity", "subject"):
        assert rows[name][1] == "2" and rows[name][4] == "no CUDA GPU here", name
    summary = (out / "summary.txt").read_text()
    assert all(name in summary for name in SESSION_STEPS) and "of a 120 s budget" in summary
    assert len(summary) < 9000 and summary in stdout  # the output's tail holds it too
    assert not (tmp_path / "work").is_relative_to(out)


def test_session_setup_imports_the_kernels_and_dry_run_collects_the_tests(tmp_path):
    """Finding 1: setup asks for ``import nvpipe.kernels, rvm`` (``import nvpipe`` passed on
    a checkout while every kernel import failed); the dry run installs nothing and only
    collects the test selections."""
    log = tmp_path / "calls.txt"
    _, rows, archived, _ = _session(tmp_path, f'echo "$*" >> {log}', "--dry-run")
    calls = log.read_text().splitlines()
    assert "-c import nvpipe.kernels, rvm" in calls
    assert not any("pip install" in call for call in calls)
    tests = [call for call in calls if call.startswith("-m pytest")]
    assert len(tests) == 4 and all("--collect-only" in call for call in tests)
    assert rows["setup"][1] == "0" and "setup.log" in archived


def test_summary_shows_the_last_value_of_each_key_figure(tmp_path):
    body = 'echo "KEY x fps: 1 (partial)"; echo "KEY x memory: 3"; echo "KEY x fps: 2 (all)"; exit 1'
    out, _, _, _ = _session(tmp_path, body, "--dry-run", "--budget", "120")
    summary = (out / "summary.txt").read_text()
    lines = [line.strip() for line in summary.splitlines()]
    assert "x fps: 2 (all)" in lines and "x fps: 1 (partial)" not in lines
    assert summary.index("x fps: 2") < summary.index("x memory: 3")  # first-seen order


def test_session_plan_fits_450_seconds_with_setup_and_packing():
    import subprocess

    done = subprocess.run(["bash", str(SESSION), "--plan"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    rows = [line.split("\t") for line in done.stdout.splitlines()[1:]]
    budgets = {row[0]: int(row[1]) for row in rows}
    assert list(budgets)[:-2] == SESSION_STEPS and "packing" in budgets
    assert budgets["total"] == sum(v for k, v in budgets.items() if k != "total") <= 450
    # A smaller budget than the plan is refused by --plan.
    assert subprocess.run(["bash", str(SESSION), "--plan", "--budget", "300"],
                          capture_output=True).returncode == 1


def test_session_test_selections_name_existing_tests():
    """The plan's pytest selections (paths, test names) exist: the dry run collects them."""
    import subprocess

    repo = SESSION.parents[1]
    done = subprocess.run(["bash", str(SESSION), "--plan"], capture_output=True, text=True)
    selections = [word for line in done.stdout.splitlines() if "cuda_tests" in line
                  for word in line.split("\t")[2].split()[2:] if word.startswith("tests/")]
    assert any("::test_borrowed_frames_survive_a_slow_consumer" in s for s in selections)
    assert "tests/engine/test_subject.py::test_selector_on_cuda_matches_the_cpu" in selections
    for selection in selections:
        path, _, test = selection.partition("::")
        assert (repo / path).is_file(), selection
        assert not test or f"def {test}(" in (repo / path).read_text(), selection
    # The decisive race test runs on its own, before any other NVDEC test.
    names = [line.split("\t")[0] for line in done.stdout.splitlines()]
    assert names.index("nvdec-race") < names.index("nvdec-tests")
    assert " -x" not in done.stdout


def test_session_keeps_to_its_budget_and_keeps_what_it_measured(tmp_path):
    """A step that overruns what is left is cut at the budget; the later ones are skipped,
    and the archive still holds the cut step's log."""
    import time

    started = time.perf_counter()
    out, rows, archived, _ = _session(tmp_path, "sleep 30", "--budget", "26")
    assert time.perf_counter() - started < 26
    assert rows["facts"][1] in ("124", "137")
    assert "facts.log" in archived
    assert all(rows[name][1] == "skipped" for name in SESSION_STEPS[3:])


def test_session_killed_midway_leaves_a_complete_archive(tmp_path):
    """Packed after every step, written aside and renamed: a call cut short (the device's
    600 s) still brings back a readable archive of the steps before."""
    import os
    import signal
    import subprocess
    import tarfile
    import time

    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\nsleep 60\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=str(fake), WORK=str(tmp_path / "work"),
               NVPIPE_SHARED=str(tmp_path / "s"), CARRY=str(tmp_path / "c"))
    session = subprocess.Popen(["bash", str(SESSION)], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not (out / "results.tgz").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(session.pid, signal.SIGKILL)
    session.wait()
    with tarfile.open(out / "results.tgz") as archive:
        names = {Path(name).name for name in archive.getnames()}
    assert "setup.log" in names and "summary.txt" in names
    assert "setup" in (out / "summary.txt").read_text()
    assert len(list(out.iterdir())) <= DEVICE_MAX_FILES


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU dry run")
def test_session_dry_run_on_this_cpu(tmp_path):
    """``--dry-run`` with the real python: setup imports nvpipe.kernels and rvm from the
    checkout, the test selections are collected, the CPU steps make their small clips."""
    import os
    import subprocess
    import tarfile

    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, WORK=str(tmp_path / "work"),
               CLIPS=str(tmp_path / "clips"))
    done = subprocess.run(["bash", str(SESSION), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    assert len(list(out.iterdir())) <= 4
    rows = {line.split("\t")[0]: line.split("\t") for line in
            (out / "steps.tsv").read_text().splitlines()[1:]}
    assert rows["setup"][1] == "0"
    for name in ("nvdec-race", "context-tests", "nvdec-tests", "clips", "x264"):
        assert rows[name][1] == "0", (name, rows[name])
    assert rows["nvdec-race"][4].startswith("1 test collected")
    assert rows["pipeline-tests"][1] == "0" and rows["subject"][4].startswith("gpu_checks subject: no CUDA GPU")
    with tarfile.open(out / "results.tgz") as archive:
        names = {Path(name).name for name in archive.getnames()}
        setup_log = archive.extractfile("./setup.log").read().decode()
        pipeline_log = archive.extractfile("./pipeline-tests.log").read().decode()
    assert {f"{name}.log" for name in SESSION_STEPS} <= names
    assert str(SESSION.parents[1] / "nvpipe" / "kernels") in setup_log
    # -k cuda keeps the subject's CUDA test (its name says cuda).
    assert "test_subject.py::test_selector_on_cuda_matches_the_cpu" in pipeline_log
    assert "test_gpu_bench.py::test_device_labeller_matches_scipy_on_cuda" in pipeline_log


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
@pytest.mark.parametrize("step", ["context", "nvdec", "network", "decode", "end_to_end", "fidelity",
                                  "subject"])
def test_gpu_check_steps_write_their_one_line_reason(step, tmp_path, capsys):
    from bench import gpu_checks

    assert gpu_checks.main([step, "--out", str(tmp_path)]) == 2
    import json

    written = json.loads((tmp_path / f"{step}.json").read_text())
    assert written["error"].startswith("no CUDA GPU") and "\n" not in written["error"]
    assert "no CUDA GPU" in capsys.readouterr().err


# --------------------------------------------------------------------------- what the call carries


def _git_repo(root: Path) -> Path:
    import subprocess

    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("/.gpu/\n/build/\n")
    (root / "code.py").write_bytes(b"x" * 1000)
    (root / "build").mkdir()
    (root / "build" / "big.bin").write_bytes(b"y" * 50_000)  # ignored, not carried: not sent
    (root / "new.txt").write_bytes(b"z" * 500)  # untracked, not ignored: sent
    subprocess.run(["git", "-C", str(root), "add", "code.py", ".gitignore"], check=True)
    return root


def test_carry_counts_the_tree_and_the_carried_paths(tmp_path):
    from bench import gpu_carry

    repo = _git_repo(tmp_path / "repo")
    (repo / ".gpu" / "wheels").mkdir(parents=True)
    (repo / ".gpu" / "wheels" / "av.whl").write_bytes(b"w" * 30_000)
    (repo / ".gpu" / "site.tar.xz").write_bytes(b"s" * 2_000)
    report = gpu_carry.measure(repo, [".gpu"])
    tree = 1000 + 500 + len("/.gpu/\n/build/\n")
    assert report["parts"] == {".gpu/wheels": 30_000, "tree": tree, ".gpu/site.tar.xz": 2_000}
    assert report["total"] == tree + 32_000 and report["fits"]
    # Over a (small) limit: refused, exit 1; a missing carried path is named.
    assert gpu_carry.main(["--repo", str(repo), "--limit-mib", "0.02"]) == 1
    assert not gpu_carry.measure(repo, [".gpu"], limit_mib=0.02)["fits"]
    assert gpu_carry.measure(repo, ["nothing"])["parts"]["nothing (missing)"] == 0


def test_this_tree_and_prepared_carry_fit_the_device(capsys):
    """The checkout (and .gpu, where gpu_prepare.sh built it) under the device's 64 MiB."""
    from bench import gpu_carry

    repo = Path(__file__).resolve().parents[2]
    carry = [".gpu"] if (repo / ".gpu").is_dir() else []
    assert gpu_carry.main(["--repo", str(repo), "--carry", *carry]) == 0, capsys.readouterr().out
    assert gpu_carry.measure(repo, [])["total"] < 8 * gpu_carry.MIB  # the tree alone: small


# --------------------------------------------------------------------------- timing and precision


class _FakeStream:
    def __init__(self, name):
        self.name = name


def _fake_cuda(log):
    """Stand-ins for torch.cuda's events, stream context and synchronize, logging in order."""
    current = [_FakeStream("legacy default")]

    class Event:
        def __init__(self):
            self.stream = None

        def record(self, stream=None):
            self.stream = stream or current[0]
            log.append(("record", self.stream.name))

        def synchronize(self):
            log.append(("synchronize event", self.stream.name))

        def elapsed_time(self, other):
            return 500.0  # ms

    import contextlib

    @contextlib.contextmanager
    def use_stream(stream):
        before, current[0] = current[0], stream
        try:
            yield
        finally:
            current[0] = before

    def step():
        log.append(("step", current[0].name))

    return Event, use_stream, step


def test_graph_timing_events_are_recorded_on_the_stage_stream():
    """Finding 3: the work runs on the stage's own (non-blocking) stream, so the events that
    time it must be recorded there, after the warm-up, around the timed calls."""
    from bench import gpu_checks

    log = []
    Event, use_stream, step = _fake_cuda(log)
    stage_stream = _FakeStream("stage")
    seconds = gpu_checks.timed_on_stage(stage_stream, step, iterations=5, warmup=2,
                                        make_event=Event, use_stream=use_stream,
                                        synchronize=lambda: log.append(("synchronize", "device")))
    assert seconds == 0.5 / 5
    assert log == ([("step", "stage")] * 2 + [("synchronize", "device"), ("record", "stage")]
                   + [("step", "stage")] * 5 + [("record", "stage"), ("synchronize event", "stage")])


def test_network_step_times_the_graphs_on_their_stage_stream():
    """The graphed timings in step_network go through timed_on_stage(stage.stream, ...)."""
    import ast
    import inspect

    from bench import gpu_checks

    tree = ast.parse(inspect.getsource(gpu_checks.step_network))
    graphed = next(node for node in ast.walk(tree)
                   if isinstance(node, ast.FunctionDef) and node.name == "graphed")
    calls = [node for node in ast.walk(graphed) if isinstance(node, ast.Call)]
    timers = [ast.unparse(call) for call in calls if ast.unparse(call.func) in ("timed_on_stage", "_timed")]
    assert len(timers) == 2 and all(t.startswith("timed_on_stage(stage.stream, ") for t in timers)


def test_no_tf32_turns_both_switches_off_and_restores_them():
    from bench import gpu_checks

    before = gpu_checks.tf32_settings()
    torch.backends.cudnn.allow_tf32 = True  # torch's default
    try:
        with gpu_checks.no_tf32():
            assert gpu_checks.tf32_settings() == {"cuda.matmul.allow_tf32": False,
                                                  "cudnn.allow_tf32": False}
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before["cuda.matmul.allow_tf32"]
        torch.backends.cudnn.allow_tf32 = before["cudnn.allow_tf32"]


@pytest.mark.parametrize("function,inner", [("step_fidelity", None), ("step_network", "fp32_eager")])
def test_fp32_references_run_without_tf32(function, inner):
    """Finding 5: the FP32 reference of the fidelity step and the FP16 speed-up's baseline
    run under no_tf32() (and record the settings in their JSON)."""
    import ast
    import inspect

    from bench import gpu_bench, gpu_checks

    tree = ast.parse(inspect.getsource(getattr(gpu_checks, function)))
    if inner:
        tree = next(node for node in ast.walk(tree)
                    if isinstance(node, ast.FunctionDef) and node.name == inner)
    withs = [ast.unparse(item.context_expr) for node in ast.walk(tree) if isinstance(node, ast.With)
             for item in node.items]
    assert "no_tf32()" in withs
    assert "tf32_settings()" in ast.unparse(tree)
    source = inspect.getsource(gpu_bench.bench_network)
    assert "with no_tf32():" in source and 'result["fp32_settings"]' in source


# --------------------------------------------------------------------------- the subject step


def _two_people(frames: int, h: int = 72, w: int = 128):
    """``(coeff_a, coeff_b, src_sm)`` per frame as the runner hands them to the selector: a
    blue person walking right beside a red one standing, on grey (the alpha is coeff_b[3])."""
    for index in range(frames):
        alpha = torch.zeros(h, w)
        rgb = torch.full((3, h, w), 0.5)
        for left, colour in ((20 + index, (0.1, 0.2, 0.9)), (80, (0.9, 0.2, 0.1))):
            alpha[25:65, left:left + 12] = 1.0
            rgb[:, 25:65, left:left + 12] = torch.tensor(colour)[:, None, None]
        coeff_b = torch.full((4, h, w), 0.1)
        coeff_b[3] = alpha
        yield torch.zeros(4, h, w), coeff_b, rgb


def _label_on_host(fg):
    from scipy import ndimage

    from nvpipe.engine.subject import EIGHT

    return ndimage.label(fg.numpy(), structure=EIGHT)


@pytest.mark.parametrize("device_label,agree", [(_label_on_host, 12),
                                                (lambda fg: (fg.numpy().astype("int32"), 1), 0),
                                                (None, 0)])
def test_subject_costs_time_the_parts_of_the_selectors_call(device_label, agree):
    """The subject step's measurement on the CPU: the parts taken one by one give the whole
    call's coefficients, every interval is closed by a synchronisation, and a labelling that
    disagrees with SciPy's (one component for two people) is counted as such."""
    from bench import gpu_checks
    from nvpipe.job import subject_spec

    syncs = []
    summary = gpu_checks.subject_costs(
        _two_people(12), subject_spec((26 * 4, 45 * 4)), (512, 288), warmup=2,
        synchronize=lambda: syncs.append(1), device_label=device_label)
    assert summary["frames"] == summary["parts_match_whole"] == 12
    assert summary["timed_frames"] == 10 and summary["components median"] == 2
    assert summary["lost frames"] == 0 and "one of 2 people" in summary["decided"]
    parts = [p for p in gpu_checks.SUBJECT_PARTS if device_label or p != "device label"]
    assert all(summary[f"{p} ms"] >= 0 for p in parts)
    assert len(syncs) == 12 * (7 + 2 * (device_label is not None))
    line = gpu_checks.subject_line(summary)
    assert line.startswith(f"selector {summary['selector ms']:.2f} ms/frame (pack ")
    assert "parts match whole 12/12" in line and "10 frames timed" in line
    if device_label is None:
        assert "device label ms" not in summary and "(cupy not measured)" in line
    else:
        assert summary["counts_agree"] == summary["sizes_agree"] == agree
        assert f"counts agree {agree}/12" in line


def test_device_labeller_says_why_without_cupy():
    from bench import gpu_checks

    try:
        import cupy  # noqa: F401
    except Exception:  # noqa: BLE001
        label, why = gpu_checks.device_labeller()
        assert label is None and "cupy" in why.lower() and "\n" not in why
    else:
        pytest.skip("CuPy imports here")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_labeller_matches_scipy_on_cuda():
    """CuPy's labelling (the alternative the subject step times) finds SciPy's components,
    8-connected, on random blobs of odd size."""
    pytest.importorskip("cupy", reason="CuPy is not installed")
    from scipy import ndimage

    from bench import gpu_checks
    from nvpipe.engine.subject import EIGHT

    label, why = gpu_checks.device_labeller()
    assert label is not None, why
    generator = torch.Generator().manual_seed(0)
    for height, width in ((288, 512), (97, 131)):
        noise = torch.rand((height, width), generator=generator).numpy()
        blobs = ndimage.gaussian_filter(noise, 3) > 0.5
        labels, count = label(torch.from_numpy(blobs).cuda())
        expected, expected_count = ndimage.label(blobs, structure=EIGHT)
        assert count == expected_count > 1
        assert np.array_equal(labels > 0, blobs)
        assert sorted(np.bincount(labels.ravel())[1:]) == sorted(np.bincount(expected.ravel())[1:])


@pytest.mark.slow
def test_subject_step_runs_on_the_cpu(tmp_path, capsys):
    """The subject step's own code (the real clip, the network, the selector), on the CPU in
    float32 over a few frames: its JSON and its KEY line, CuPy skipped with the reason."""
    import json
    from types import SimpleNamespace

    from bench import gpu_checks
    from conftest import SHARED

    clip = SHARED / "footage" / "four_people_1080p.mp4"
    weights = SHARED / "weights" / "rvm_mobilenetv3_bnidentity.pth"
    if not clip.exists() or not weights.exists():
        pytest.skip(f"needs {clip} and {weights} (../shared)")
    results = gpu_checks.Results(tmp_path, "subject")
    gpu_checks.step_subject(results, SimpleNamespace(shared=str(SHARED), weights=str(weights)),
                            device="cpu", dtype=torch.float32, count=gpu_checks.SUBJECT_WARMUP + 3)
    written = json.loads((tmp_path / "subject.json").read_text())
    assert written["input"]["network input"] == [512, 288] and written["cupy"].startswith("skipped")
    summary = written["summary"]
    assert summary["timed_frames"] == 3 and summary["parts_match_whole"] == summary["frames"] == 11
    assert summary["lost frames"] == 0 and summary["components median"] >= 1
    assert 'KEY subject subject: "selector ' in capsys.readouterr().out
