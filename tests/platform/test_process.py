"""nvpipe.platform.process: the ``nvpipe`` program spaces out the garbage collector's passes,
turns off torch's backend scan and freezes the collector before its exit; a library user's
process keeps its own settings. Each case runs in a fresh interpreter (the test process's
collector is left alone)."""

import subprocess
import sys
import textwrap

from conftest import REPO


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_program_sets_its_process_up_and_freezes_before_its_exit():
    out = _python("""
        import gc, sys
        from unittest import mock
        from nvpipe.app import cli
        from nvpipe.platform.process import YOUNG_THRESHOLD
        import os
        seen = {}
        os.environ.pop("TORCH_DEVICE_BACKEND_AUTOLOAD", None)
        def main():
            seen["threshold"] = gc.get_threshold()[0]
            seen["frozen"] = gc.get_freeze_count()
            seen["autoload"] = os.environ.get("TORCH_DEVICE_BACKEND_AUTOLOAD")
            return 3
        with mock.patch.object(cli, "main", main):
            code = cli.program()
        assert code == 3
        assert seen == {"threshold": YOUNG_THRESHOLD, "frozen": 0, "autoload": "0"}, seen
        assert gc.get_freeze_count() > 1000  # frozen after main, for the exit
        print("ok")
        """)
    assert out == "ok"


def test_a_library_user_keeps_its_collector():
    out = _python("""
        import gc, os
        os.environ.pop("TORCH_DEVICE_BACKEND_AUTOLOAD", None)
        before = gc.get_threshold()
        import nvpipe
        from nvpipe.app import cli  # the command line's module, imported, not run
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        assert "TORCH_DEVICE_BACKEND_AUTOLOAD" not in os.environ
        print("ok")
        """)
    assert out == "ok"


def test_the_command_runs_through_program():
    setup = (REPO / "setup.py").read_text()
    assert '"nvpipe=nvpipe.app.cli:program"' in setup
    assert "program()" in (REPO / "nvpipe" / "__main__.py").read_text()
    done = subprocess.run([sys.executable, "-m", "nvpipe", "--version"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "0.1.0" in done.stdout + done.stderr
