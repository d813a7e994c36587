"""A conversion as plain data: what the CLI, ``convert_video`` and batches all build."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from nvpipe.errors import NvpipeError

# The one vocabulary: the CLI's choices, convert_video, batches and the sinks read these.
OUTPUT_KINDS = ("composite", "alpha", "foreground", "rgba", "rgba_premultiplied")
ALPHA_KINDS = ("rgba", "rgba_premultiplied")  # the kinds that carry an alpha channel
DEVICES = ("cpu", "cuda")  # and "cuda:N", the N-th CUDA device, as torch and RVM take it
VARIANTS = ("mobilenetv3", "resnet50")  # = rvm.VARIANTS (kept here: no torch import for --help)
ENCODERS = ("auto", "cpu", "nvenc")
DTYPES = ("float32", "float16", "bfloat16")  # bfloat16: CPU only, opt-in
# The CPU engine of the network (nvpipe.engine.matting.engines): auto times those installed
# once per machine and input size.
CPU_ENGINES = ("auto", "torch", "onnxruntime", "openvino")
# What --codec takes: the CPU encoders of nvpipe.sinks.pyav, NVENC (nvpipe.sinks.encoders)
# and PNG pictures (nvpipe.sinks.images).
CODECS = ("h264", "hevc", "av1", "prores", "vp9", "png")

# The default composite background, one per entry point: ``nvpipe run`` and ``Job`` use
# pure green (#00ff00, the usual keying colour); ``convert_video`` keeps RVM's converter's
# (RGB 120, 255, 155), so scripts moved over from RVM give the same pictures.
DEFAULT_GREEN = "#00ff00"
RVM_GREEN = "#78ff9b"


# -- who to keep (nvpipe.engine.subject) ------------------------------------------------------
SubjectChoice = Union[str, tuple]


@dataclass(frozen=True)
class SubjectSpec:
    """Who to keep: ``points`` (``(x, y)`` in the input's displayed pixels of the first
    frame, after ``--start``), ``main`` (the largest person) or ``mask`` (an image, white
    where the people to keep are, any size)."""

    points: tuple = ()
    main: bool = False
    mask: Optional[str] = None

    def describe(self) -> str:
        if self.mask:
            return f"the people under the mask {self.mask}"
        if self.main:
            return "the largest person"
        return " and ".join(f"the person at {x:g},{y:g}" for x, y in self.points)


def parse_subject(text: str) -> SubjectChoice:
    """``"main"`` or ``"X,Y"`` (input pixels) -> ``"main"`` or ``(x, y)``; ValueError else."""
    text = text.strip()
    if text.lower() == "main":
        return "main"
    parts = text.split(",")
    try:
        x, y = (float(part) for part in parts)
    except ValueError:
        raise ValueError(f"subject must be X,Y (pixels of the first frame) or main, "
                         f"got {text!r}") from None
    if x < 0 or y < 0:
        raise ValueError(f"subject coordinates must be 0 or more, got {text!r}")
    return (x, y)


def subject_spec(subject=None, subject_mask: Optional[str] = None) -> Optional[SubjectSpec]:
    """The API's forms -> a ``SubjectSpec`` (None: keep everyone). ``subject``: ``"main"``,
    ``"X,Y"``, an ``(x, y)`` pair, or a list of those; ``subject_mask``: an image path."""
    if subject is None or subject == () or subject == []:
        choices = []
    elif isinstance(subject, str) or (isinstance(subject, (tuple, list)) and len(subject) == 2
                                      and all(isinstance(v, (int, float)) for v in subject)):
        choices = [subject]
    else:
        choices = list(subject)
    parsed = [parse_subject(c) if isinstance(c, str) else (float(c[0]), float(c[1]))
              for c in choices]
    if subject_mask is not None and parsed:
        raise NvpipeError("give --subject or --subject-mask, not both")
    if subject_mask is not None:
        return SubjectSpec(mask=str(subject_mask))
    if not parsed:
        return None
    if "main" in parsed:
        if len(parsed) > 1:
            raise NvpipeError("--subject main cannot be combined with points")
        return SubjectSpec(main=True)
    return SubjectSpec(points=tuple(parsed))



@dataclass
class OutputSpec:
    """One file (or image sequence) the job writes.

    ``codec`` None picks from the name: .mp4/.mkv -> h264, .mov -> prores (4444 with alpha),
    .webm -> vp9 (with alpha), a directory or ``%05d.png`` pattern -> png.
    ``crf`` and ``bitrate`` (bits/s) are mutually exclusive; neither means the codec default.
    """

    path: str
    kind: str = "composite"
    codec: Optional[str] = None
    crf: Optional[int] = None
    bitrate: Optional[int] = None
    preset: Optional[str] = None
    format: Optional[str] = None  # a stream output's muxer (nvpipe.sinks.stream): nut, mpegts...

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"output kind must be one of {OUTPUT_KINDS}, got {self.kind!r}")
        if self.crf is not None and self.bitrate is not None:
            raise ValueError("give crf or bitrate, not both")


@dataclass
class Job:
    """Convert one input into one or more outputs.

    ``ratio`` None means automatic: ``min(512 / max(H, W), 1)``. ``background`` is a colour
    (``"#00ff00"``, ``"green"``, ``"0,255,0"``), an image or video path, or None where no
    output needs one (a composite then gets ``DEFAULT_GREEN``). ``dtype`` None means
    float32 on the CPU and float16 on CUDA.
    ``start``/``duration`` (seconds) and ``frames`` trim the input (``nvpipe.sources.trim``:
    with a ``start`` the outputs' timestamps begin at 0, audio trimmed alike); ``fps`` is the
    frame rate given to a picture sequence (default 30; videos keep their own timing).
    Where the outputs end up when the run completes, fails or is interrupted is the policy
    of ``nvpipe.sinks.outputs``.
    """

    input: str
    outputs: list[OutputSpec] = field(default_factory=list)
    ratio: Optional[float] = None
    device: str = "cpu"
    variant: str = "mobilenetv3"
    weights: Optional[str] = None
    background: Optional[str] = DEFAULT_GREEN
    chunk: int = 1
    overwrite: bool = False
    dtype: Optional[str] = None  # "float32" | "float16" | "bfloat16" (CPU)
    engine: Optional[str] = None  # CPU_ENGINES; None: $NVPIPE_ENGINE or auto
    resize: Optional[tuple[int, int]] = None  # (width, height) applied to the input
    encoder: str = "auto"  # auto: NVENC for H.264/HEVC on a GPU that has it; cpu; nvenc
    keep_partial: bool = False  # a failed run keeps the frames done (never over a file)
    start: float = 0.0  # seconds of the input skipped
    duration: Optional[float] = None  # seconds converted from ``start`` (None: to the end)
    frames: Optional[int] = None  # at most this many frames
    fps: Optional[float] = None  # picture sequences' frame rate (None: 30)
    # Stream inputs (nvpipe.sources.live): FFmpeg's -f and -option, seconds without data
    # that end the stream, and live pacing forced on/off (None: by the kind of input).
    input_format: Optional[str] = None
    input_options: dict = field(default_factory=dict)
    timeout: Optional[float] = None
    live: Optional[bool] = None
    cut_reset: bool = True  # reset the network's memory at scene cuts (nvpipe.engine.cuts)
    # --device auto chose cuda: a GPU pipeline that fails before its first frame reruns on
    # the CPU (nvpipe.engine.fallback.run_guarded) instead of failing.
    cpu_fallback: bool = False
    # Keep one person (or a few), everyone else's alpha zero (nvpipe.engine.subject):
    # "main", (x, y) / "X,Y" pixels of the first frame (after start), or a list of points;
    # or a first-frame mask image, white where the people to keep are.
    subject: tuple = ()
    subject_mask: Optional[str] = None

    def __post_init__(self) -> None:
        parse_device(self.device)  # cpu, cuda or cuda:N
        self.device = str(self.device).strip().lower()
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.ratio is not None:
            self.ratio = check_ratio(self.ratio)
        if self.resize is not None:
            self.resize = check_size(self.resize)
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        check_whole(self.chunk, "chunk")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.engine is not None and self.engine not in CPU_ENGINES:
            raise ValueError(f"engine must be one of {CPU_ENGINES}, got {self.engine!r}")
        if self.dtype == "bfloat16" and self.device != "cpu":
            raise ValueError("dtype bfloat16 is for the CPU (CUDA runs float16)")
        if self.start < 0:
            raise ValueError(f"start must be 0 or more seconds, got {self.start}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"duration must be positive, got {self.duration}")
        if self.frames is not None:
            check_whole(self.frames, "frames")
        if self.fps is not None:
            check_fps(self.fps)  # the value kept as given: a Fraction stays exact
        if self.timeout is not None:
            check_positive(self.timeout, "timeout")
        try:
            subject_spec(self.subject, self.subject_mask)
        except NvpipeError as error:
            raise ValueError(str(error)) from None

    @property
    def subject_spec(self) -> Optional[SubjectSpec]:
        """Who to keep (None: everyone)."""
        return subject_spec(self.subject, self.subject_mask)


def parse_device(device) -> tuple[str, Optional[int]]:
    """``"cpu"`` -> ``("cpu", None)``, ``"cuda"`` -> ``("cuda", None)`` (the current CUDA
    device), ``"cuda:1"`` -> ``("cuda", 1)``; a ``torch.device`` is read the same way.
    ``ValueError`` for anything else."""
    text = str(device).strip().lower()
    kind, colon, index = text.partition(":")
    if kind in DEVICES and not colon:
        return kind, None
    if kind == "cuda" and colon and index.isdigit():
        return kind, int(index)
    raise ValueError(f"device must be cpu, cuda or cuda:N (N a GPU number), got {device!r}")


def device_type(device) -> str:
    """``"cpu"`` or ``"cuda"`` (``"cuda:1"`` -> ``"cuda"``)."""
    return parse_device(device)[0]


def gpu_index(device) -> int:
    """The CUDA device number of ``"cuda:N"`` (N), of ``"cuda"`` torch's current device (0
    where CUDA is not initialised yet)."""
    kind, index = parse_device(device)
    if kind != "cuda":
        raise ValueError(f"{device!r} is not a CUDA device")
    if index is not None:
        return index
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return torch.cuda.current_device()
    return 0


def auto_ratio(width: int, height: int) -> float:
    """The official converter's automatic downsample ratio, ``min(512 / max(H, W), 1)``,
    raised where it would leave the short side no pixel (a 2048x2 frame: 0.25 gives 0.5 of
    a row, so 0.5 instead)."""
    import math

    ratio = min(512 / max(width, height), 1.0)
    short = min(width, height)
    if short >= 1 and math.floor(short * ratio) < 1:
        ratio = min(1.0 / short, 1.0)
        while math.floor(short * ratio) < 1 and ratio < 1.0:  # 1/3 * 3 < 1 in floating point
            ratio = math.nextafter(ratio, 2.0)
    return ratio


# -- limits: one place for the CLI's parsers, Job, convert_video and MattingSession -----------
# A frame side above this is refused before anything is allocated: 8192 is DCI 8K (8K UHD
# is 7680x4320); a float32 RGB 8192x8192 frame is already 0.8 GB, and the run holds dozens.
MAX_SIDE = 8192
# Frame rates above this are refused: no camera or codec of use here goes past 1000 fps,
# and 1e9 fps gives frames 1 ns apart (time bases overflow, players give up).
MAX_FPS = 1000


def _number(value, name: str, accepted: str) -> float:
    """``value`` as a float, or ``TypeError`` naming ``name`` and what it accepts."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {accepted}, got {value!r}")
    return float(value)


def check_ratio(value, name: str = "ratio") -> float:
    """A downsample ratio in (0, 1]."""
    ratio = _number(value, name, "a number in (0, 1]")
    if not 0 < ratio <= 1:  # NaN fails too
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return ratio


def check_whole(value, name: str, minimum: int = 1) -> int:
    """A whole number >= ``minimum`` (``chunk``, ``frames``, ``seq_chunk``)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


def check_size(value, name: str = "resize") -> tuple[int, int]:
    """``(width, height)``, each a whole number in 1..MAX_SIDE."""
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"{name} must be (width, height), e.g. (1280, 720), got {value!r}")
    width, height = (check_whole(side, name) for side in value)
    if max(width, height) > MAX_SIDE:
        raise ValueError(f"{name} {width}x{height} is too large: each side at most "
                         f"{MAX_SIDE} pixels")
    return width, height


def check_fps(value, name: str = "fps") -> float:
    """A frame rate in (0, MAX_FPS]."""
    fps = _number(value, name, f"a number of frames per second in (0, {MAX_FPS}]")
    if not 0 < fps <= MAX_FPS:
        raise ValueError(f"{name} must be in (0, {MAX_FPS}] frames per second, got {value!r}")
    return fps


def check_positive(value, name: str) -> float:
    """A number above 0 (``timeout``, ``output_video_mbps``)."""
    number = _number(value, name, "a number above 0")
    if not number > 0:
        raise ValueError(f"{name} must be above 0, got {value!r}")
    return number
