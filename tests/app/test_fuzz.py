"""Issue 22: fuzzed inputs. Seeded byte flips (anywhere, and in the MP4 index) and
truncations of a real clip: each run exits 0 with an output that decodes fully, or exits
non-zero with one line and no output; never a traceback, never a hang, the input untouched.

The cases run in one child process (a hang fails the test at its timeout instead of
holding the suite), each through ``nvpipe.app.cli.main`` with its standard error captured.
"""

import hashlib
import json
import random
import subprocess
import sys

from conftest import SHARED, count_frames, make_clip
from nvpipe.app.automation import EXIT_INPUT

SEED = 22
FLIPS = 8        # clips with bytes flipped anywhere
INDEX_FLIPS = 6  # clips with bytes flipped inside the moov (the index and metadata)
CUTS = 4         # truncations

DRIVER = r"""
import contextlib, io, json, sys
from nvpipe.app.cli import main
results = []
for source, out in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(["run", source, out, "--quiet", "--ratio", "1"])
        except SystemExit as exit:
            code = exit.code
        except BaseException as error:
            code, err = "raised", io.StringIO(f"Traceback: {type(error).__name__}: {error}")
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def _cases(clip, folder):
    data = clip.read_bytes()
    moov = data.find(b"moov")
    rng = random.Random(SEED)
    cases = []
    for i in range(FLIPS):
        fuzzed = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            fuzzed[rng.randrange(len(data))] = rng.randrange(256)
        cases.append((f"flip{i}", bytes(fuzzed)))
    for i in range(INDEX_FLIPS):
        fuzzed = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            fuzzed[rng.randrange(moov, len(data))] = rng.randrange(256)
        cases.append((f"index{i}", bytes(fuzzed)))
    for i in range(CUTS):
        cases.append((f"cut{i}", data[: rng.randrange(16, len(data))]))
    paths = []
    for name, content in cases:
        path = folder / f"{name}.mp4"
        path.write_bytes(content)
        paths.append(path)
    return paths


def test_fuzzed_inputs_never_hang_never_trace(weights_env, tmp_path):
    clip = make_clip(SHARED / "footage" / "person_fullbody_360x640.mp4", tmp_path / "clip.mp4",
                     frames=6, size=(64, 96))
    inputs = tmp_path / "in"
    outputs = tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    paths = _cases(clip, inputs)
    before = {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}
    pairs = [(str(path), str(outputs / path.name)) for path in paths]
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(pairs)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    converted = 0
    for (source, out), (code, stderr) in zip(pairs, results):
        assert "Traceback" not in stderr and "internal error" not in stderr, (source, stderr)
        assert hashlib.sha256(open(source, "rb").read()).hexdigest() == before[source]
        if code == 0:
            assert count_frames(out) >= 1, source  # decodes fully (raises otherwise)
            converted += 1
        else:
            assert code == EXIT_INPUT, (source, code, stderr)  # the input is bad
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("nvpipe: error: "), (source, stderr)
            assert not (outputs / out).exists(), source
    assert sorted(p.name for p in outputs.iterdir() if p.name.startswith(".")) == []
    # Both ways of ending are exercised: some fuzzed clips still convert, some cannot.
    assert 0 < converted < len(pairs), results
