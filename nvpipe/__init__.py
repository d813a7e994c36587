"""nvpipe: human video matting (Robust Video Matting) at GPU speed, with a CPU fallback.

Public API (re-exported lazily from private modules, so ``nvpipe.app.cli`` can tune the
threading environment before torch loads):
- ``convert_video(...)``: RVM's converter's arguments, nvpipe's pipeline.
- ``Job``, ``OutputSpec``, ``run``: a conversion as data, and running it.
- ``MattingSession``: frames in, mattes out, for embedding.
- ``NvpipeError`` and its kinds: what users can act on.
"""

import importlib

from nvpipe.platform.threads import tune_for_pipeline

# The Python entry points get the CLI's threading set-up: it must come before torch loads
# (OpenMP reads it once), and ``import nvpipe`` is usually that moment.
tune_for_pipeline()

__version__ = "0.1.0"

_EXPORTS = {
    "convert_video": ".api",
    "Job": ".job", "OutputSpec": ".job",
    "run": ".engine.runner", "RunResult": ".engine.runner", "Interrupted": ".engine.runner",
    "MattingSession": ".session", "Matte": ".session",
    "NvpipeError": ".errors", "InputError": ".errors", "OutputError": ".errors",
    "DeviceError": ".errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nvpipe' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
