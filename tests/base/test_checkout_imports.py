"""A checkout imports as an installation does (issue 17, finding 1): with only the checkout on
``sys.path`` and no nvpipe installed, the pipeline's modules import, ``nvpipe.kernels``
included (the GPU session puts the checkout on PYTHONPATH and installs nothing).

The subprocess runs isolated (``-I``: no PYTHONPATH, no user site) and removes every
editable-install finder (this venv has one for another checkout) before importing, so what
is imported can only come from this checkout; each module's file must lie under it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

MODULES = ["nvpipe", "nvpipe.kernels", "rvm", "nvpipe.engine.runner", "nvpipe.engine.convert",
           "nvpipe.engine.matting", "nvpipe.sources.nvdec", "nvpipe.sinks.nvenc",
           "nvpipe.platform.gpu", "nvpipe.app.cli"]

_PROBE = r"""
import importlib, json, sys
checkout = sys.argv[1]
# Nothing installed: no editable finder (setuptools' __editable__ hooks), no other nvpipe on the path.
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                    and "editable" not in getattr(f, "__name__", "").lower()]
sys.path[:] = [checkout] + [p for p in sys.path if p and "nvpipe" not in p]
files = {}
for name in sys.argv[2:]:
    module = importlib.import_module(name)
    files[name] = module.__file__
print(json.dumps(files))
"""


def test_the_pipeline_imports_from_a_plain_checkout(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["TRITON_INTERPRET"] = "1"  # as the tests run without a GPU; no effect on importing
    done = subprocess.run([sys.executable, "-I", "-c", _PROBE, str(REPO), *MODULES],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    files = json.loads(done.stdout.strip().splitlines()[-1])
    for name, path in files.items():
        resolved = Path(path).resolve()
        assert resolved.is_relative_to(REPO), f"{name} came from {resolved}, not {REPO}"
    # The kernels are the top-level kernels/ (nvpipe/kernels links there), as installed.
    assert Path(files["nvpipe.kernels"]).resolve() == REPO / "kernels" / "__init__.py"


def test_nvpipe_kernels_is_a_committed_link_to_kernels():
    link = REPO / "nvpipe" / "kernels"
    assert link.is_symlink() and os.readlink(link) == "../kernels"
    listed = subprocess.run(["git", "ls-files", "-s", "nvpipe/kernels"], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:  # a git checkout (not an sdist)
        assert listed.stdout.startswith("120000 "), listed.stdout  # git's mode for a link
