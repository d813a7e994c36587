"""nvpipe: human video matting (Robust Video Matting) at GPU speed, with a CPU fallback.

Public API (re-exported from private modules):
- ``convert_video(...)``: RVM's converter's arguments, nvpipe's pipeline.
- ``Job``, ``OutputSpec``, ``run``: a conversion as data, and running it.
- ``MattingSession``: frames in, mattes out, for embedding.
- ``NvpipeError``: what users can act on.
"""

from .api import convert_video
from .errors import DeviceError, InputError, NvpipeError, OutputError
from .job import Job, OutputSpec
from .runner import Interrupted, RunResult, run
from .session import Matte, MattingSession

__version__ = "0.1.0"

__all__ = ["convert_video", "Job", "OutputSpec", "run", "RunResult", "Interrupted",
           "MattingSession", "Matte", "NvpipeError", "InputError", "OutputError",
           "DeviceError", "__version__"]
