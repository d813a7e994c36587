"""nvpipe run --watch IN/ OUT/: clips converted as they arrive, once they are complete,
exactly once, and resumably (the batch record)."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import CLIP_FRAMES, count_frames

pytestmark = pytest.mark.slow


def _watch(inbox, out, *args):
    return subprocess.Popen([sys.executable, "-m", "nvpipe", "run", "--watch", str(inbox),
                             str(out), "--ratio", "0.5", "-q", *map(str, args)],
                            stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _copy_slowly(source, target, chunks=8, pause=0.3, sizes=None):
    """Copies ``source`` in ``chunks`` writes ``pause`` seconds apart, the file open all
    along (a slow network copy); records the size after each write."""
    data = source.read_bytes()
    step = -(-len(data) // chunks)
    with open(target, "wb") as file:
        for start in range(0, len(data), step):
            file.write(data[start:start + step])
            file.flush()
            if sizes is not None:
                sizes.append(os.path.getsize(target))
            time.sleep(pause)


def test_a_clip_copied_in_slowly_is_converted_once_complete_exactly_once(small_clip,
                                                                          weights_env, tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    process = _watch(inbox, out, "--watch-settle", "1.5", "--watch-idle", "4")
    try:
        assert _wait_for(out.exists), "the watch did not start"
        time.sleep(0.5)  # the observer is running once out/ exists; a margin all the same
        sizes = []
        copier = threading.Thread(target=_copy_slowly, args=(small_clip, inbox / "clip.mp4"),
                                  kwargs={"sizes": sizes})
        copier.start()
        copier.join()
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert sizes[-1] == small_clip.stat().st_size and len(set(sizes)) == len(sizes)
    converted = [line for line in stderr.splitlines() if "watch: converted clip.mp4" in line]
    assert len(converted) == 1, stderr  # once, though the file changed 8 times
    assert "nvpipe: failed" not in stderr and "1 converted, 0 skipped, 0 failed" in stderr, stderr
    assert count_frames(out / "clip.mp4") == CLIP_FRAMES
    record = json.loads((out / ".nvpipe-batch.json").read_text())
    assert record["outputs"]["clip.mp4"]["state"] == "complete"
    # Watching again: the clip is recorded complete, so it is not converted again.
    written = (out / "clip.mp4").stat().st_mtime_ns
    again = _watch(inbox, out, "--watch-idle", "2")
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert "converted" not in stderr.replace("0 converted", "") and "skipped" in stderr
    assert (out / "clip.mp4").stat().st_mtime_ns == written


def test_watch_exit_after_and_ignored_files(small_clip, weights_env, tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    (inbox / ".partial.mp4").write_bytes(b"a copy tool's temporary file")
    (inbox / "notes.txt").write_text("not a video")
    (inbox / "a.mp4").write_bytes(small_clip.read_bytes())  # there before the watch
    process = _watch(inbox, out, "--watch-exit-after", "2")
    try:
        assert _wait_for(lambda: (out / "a.mp4").exists())
        (inbox / "b.mp4").write_bytes(small_clip.read_bytes())  # arrives during it
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.mp4", "b.mp4"]
    assert "2 converted, 0 skipped, 0 failed" in stderr
