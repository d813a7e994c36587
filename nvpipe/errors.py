"""User-facing errors: one line, no traceback from the CLI."""


class NvpipeError(Exception):
    """An error the user can act on (bad input, missing file, unsupported option).

    The CLI prints ``nvpipe: error: <message>`` and exits non-zero.
    """


def user_errors() -> tuple[type[Exception], ...]:
    """The exceptions the CLI prints as one line: nvpipe's own, and the stand-alone ``rvm``
    package's ``WeightsError`` once rvm is loaded (``except user_errors() as error:``)."""
    import sys

    rvm = sys.modules.get("rvm")
    return (NvpipeError, rvm.WeightsError) if rvm is not None else (NvpipeError,)


class UsageError(NvpipeError):
    """Options that do not go together, or a value no option takes (the CLI exits 2)."""


class InputError(NvpipeError):
    """The input could not be read or decoded (the CLI exits 3)."""


class OutputError(NvpipeError):
    """An output could not be written (exists, directory missing, codec unavailable)."""


class OutputBlocked(OutputError):
    """An output exists (and ``overwrite`` was not given) or another nvpipe run holds its
    lock (the CLI exits 4)."""


class DeviceError(NvpipeError):
    """The requested device cannot run (no driver, PyNvVideoCodec or Triton missing; the
    CLI exits 5)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run stops and keeps the frames done."""


def raise_terminated(signum, frame) -> None:
    """The SIGTERM handler of the CLI and batch workers
    (``signal.signal(signal.SIGTERM, raise_terminated)`` in the main thread)."""
    raise Terminated
