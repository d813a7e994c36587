"""bench/subject_ab.py: the tracker against itself gives identical keep masks and labels, and
against a changed copy it says they differ (so its "identical" is a comparison that can fail)."""

import json

import pytest

from conftest import REPO, _shared_path, load_bench_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recorded():
    # Each skips, with the reason, where ../shared lacks it.
    _shared_path("weights/rvm_mobilenetv3_bnidentity.pth")
    _shared_path("footage/four_people_1080p.mp4")
    ab = load_bench_script("subject_ab")
    return ab, ab.recorded_cases(5, made=False)


def test_the_same_tracker_replays_identically(recorded, capsys):
    ab, _ = recorded
    current = str(REPO / "nvpipe" / "engine" / "subject.py")
    assert ab.main([current, current, "--rounds", "1", "--frames", "5"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    case = report["cases"]["four_people"]
    assert list(report["cases"]) == ["four_people"] and report["all_identical"] is True
    assert case["identical_keep_masks"] is True and case["identical_labels"] is True
    assert case["frames"] == 5
    assert all(ms > 0 for ms in case["cpu_ms_per_frame"]["old"] + case["cpu_ms_per_frame"]["new"])


def test_a_changed_tracker_is_told_apart(recorded, tmp_path):
    ab, cases = recorded
    spec, size, steps = cases["four_people"]
    source = (REPO / "nvpipe" / "engine" / "subject.py").read_text()
    line = "keep = np.isin(territory, subject_ids)"
    assert line in source
    changed = tmp_path / "subject_changed.py"
    changed.write_text(source.replace(line, "keep = ~np.isin(territory, subject_ids)"))
    _, ours, _ = ab.replay(ab.load_version(str(REPO / "nvpipe" / "engine" / "subject.py"),
                                           "ab_ours"), spec, size, steps)
    _, theirs, _ = ab.replay(ab.load_version(str(changed), "ab_changed"), spec, size, steps)
    assert ours.shape == theirs.shape and not (ours == theirs).all()
