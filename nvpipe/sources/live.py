"""Inputs that are not files: standard input, named pipes, FFmpeg URLs, capture devices.

``locate_input`` says what an input names and whether it is *live* (it arrives in real
time and does not wait for the pipeline: the runner records every frame into a bounded
buffer, or drops frames rather than fall behind when an output is live; see
``nvpipe.engine.pacing``):

=================================================  =======  ==========================
input                                              kind     live by default
=================================================  =======  ==========================
``-``, ``pipe:``, ``pipe:0``, ``/dev/stdin``        stdin    no: a pipe holds its writer
a named pipe (FIFO)                                pipe     no: the same back-pressure
``udp://``, ``rtp://``, ``srt://``, ``rtmp://``,    url      yes: the sender does not wait
``rtsp://``, ``tcp://``
``http://``, ``https://`` (files, HLS)             url      no (``--live`` for live HLS)
``/dev/videoN`` (V4L2), or any ``--input-format``  device   yes
of an FFmpeg input device
anything else                                      file     never
=================================================  =======  ==========================

``live`` given explicitly (``--live`` / ``--no-live``) overrides the default.
"""

from __future__ import annotations

import os
import re
import select
import stat
import threading
import time
from dataclasses import dataclass
from typing import Optional

STDIN_NAMES = ("-", "pipe:", "pipe:0", "/dev/stdin")
# Protocols whose sender runs in real time whether or not anyone keeps up.
REAL_TIME_SCHEMES = ("udp", "rtp", "srt", "rtmp", "rtmps", "rtsp", "rtsps", "tcp")
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# FFmpeg input devices (libavdevice) a --input-format may name: their inputs are live.
DEVICE_FORMATS = ("v4l2", "video4linux2", "avfoundation", "dshow", "gdigrab", "x11grab",
                  "kmsgrab", "fbdev", "decklink", "lavfi")
# A network URL that names no --timeout ends after this many seconds without data (UDP
# has no end of stream: without it a run would wait for ever once the sender stops).
DEFAULT_URL_TIMEOUT = 10.0


@dataclass(frozen=True)
class InputLocation:
    """What an input names. ``kind``: ``file``, ``stdin``, ``pipe``, ``url`` or ``device``."""

    text: str
    kind: str
    live: bool
    scheme: str = ""

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


def url_scheme(text: str) -> str:
    """``"udp"`` for ``udp://...``; ``""`` for anything that is not a URL."""
    match = _URL.match(str(text))
    return match.group(1).lower() if match else ""


def locate_input(text: str, *, live: Optional[bool] = None,
                 input_format: Optional[str] = None) -> InputLocation:
    """Classifies an input (see the module docstring). Does not open it."""
    text = str(text)
    scheme = url_scheme(text)
    if text in STDIN_NAMES:
        kind, default_live = "stdin", False
    elif scheme == "file":
        return locate_input(text[len("file://"):], live=live, input_format=input_format)
    elif scheme:
        kind, default_live = "url", scheme in REAL_TIME_SCHEMES
    elif (input_format or "").lower() in DEVICE_FORMATS or _is_capture_device(text):
        kind, default_live = "device", True
    elif _is_fifo(text):
        kind, default_live = "pipe", False
    else:
        return InputLocation(text, "file", False)
    return InputLocation(text, kind, default_live if live is None else bool(live), scheme)


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _is_capture_device(path: str) -> bool:
    """``/dev/video0`` and the like: a character device (V4L2 capture)."""
    if not path.startswith("/dev/video"):
        return False
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return True  # named like one: the open then says what is wrong


def open_fifo(path: str) -> int:
    """A named pipe's descriptor for reading, opened without waiting for a writer: a plain
    ``open`` blocks until one connects, where neither ``--timeout`` nor the run's stop can
    act. The descriptor is then made blocking again; ``PipeReader`` waits in ``select``,
    which reports nothing until a writer has connected (Linux), so the timeout and a stop
    apply from the start."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    return fd
# Protocols FFmpeg takes through an external library that PyAV's own wheels are built
# without (``Protocol not found``), and how to get the stream in or out all the same.
EXTERNAL_PROTOCOLS = {"srt": "libsrt", "rist": "librist", "sftp": "libssh"}


def missing_protocol(url: str, *, output: bool = False) -> str:
    """The one-line message for a URL whose protocol this FFmpeg build lacks (PyAV's wheels
    carry no libsrt), naming the way round: ffmpeg (built with it) piping to or from nvpipe."""
    scheme = url_scheme(url)
    library = EXTERNAL_PROTOCOLS.get(scheme)
    built = f"built without {library}" if library else f"built without the {scheme} protocol"
    if output:
        way = (f"pipe nvpipe's output into an ffmpeg that has it: nvpipe run IN - --format "
               f"mpegts | ffmpeg -i - -c copy -f mpegts {url}")
    else:
        way = (f"receive it with an ffmpeg that has it and pipe it in: ffmpeg -i {url} -c copy "
               f"-f mpegts - | nvpipe run - OUT")
    return f"cannot open {url}: this FFmpeg (PyAV's) is {built}; {way}"


class PipeReader:
    """A file-like reader of a pipe's file descriptor for PyAV, that gives up after
    ``timeout`` seconds without data and when ``stop`` is set (a plain blocking read of a
    silent pipe could be interrupted by neither). Giving up reads as end of stream;
    ``timed_out`` then says so.

    It waits in ``select`` slices of ``POLL_SECONDS``, so a stop is seen within that.
    """

    POLL_SECONDS = 0.1

    def __init__(self, fd: int, *, timeout: Optional[float] = None,
                 stop: Optional[threading.Event] = None, name: str = "pipe"):
        self.fd = fd
        self.timeout = timeout
        self.stop = stop or threading.Event()
        self.name = name
        self.timed_out = False
        self.bytes_read = 0
        # Ctrl-C or SIGTERM that came during a read: PyAV's read callback swallows
        # exceptions (it prints them and reads on), so the read ends the stream instead and
        # the caller re-raises this (``raise_interrupt``).
        self.interrupt: Optional[BaseException] = None

    def read(self, size: int) -> bytes:
        waited_since = time.monotonic()
        try:
            while not self.stop.is_set():
                ready, _, _ = select.select([self.fd], [], [], self.POLL_SECONDS)
                if ready:
                    data = os.read(self.fd, size)
                    self.bytes_read += len(data)
                    return data
                if self.timeout is not None and time.monotonic() - waited_since >= self.timeout:
                    self.timed_out = True
                    return b""
        except KeyboardInterrupt as interrupt:
            self.interrupt = interrupt
            self.stop.set()
        return b""

    def raise_interrupt(self) -> None:
        """Re-raises a Ctrl-C or SIGTERM that a read swallowed (see ``interrupt``)."""
        if self.interrupt is not None:
            interrupt, self.interrupt = self.interrupt, None
            raise interrupt

    def close(self) -> None:
        """Closes the descriptor, unless it is standard input (fd 0 is the process's)."""
        if self.fd > 2:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd = -1


__all__ = ["InputLocation", "locate_input", "url_scheme", "PipeReader", "open_fifo", "STDIN_NAMES",
           "missing_protocol", "EXTERNAL_PROTOCOLS",
           "REAL_TIME_SCHEMES", "DEVICE_FORMATS", "DEFAULT_URL_TIMEOUT"]
