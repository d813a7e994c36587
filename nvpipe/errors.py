"""User-facing errors: one line, no traceback from the CLI."""


class NvpipeError(Exception):
    """An error the user can act on (bad input, missing file, unsupported option).

    The CLI prints ``nvpipe: error: <message>`` and exits non-zero.
    """


class InputError(NvpipeError):
    """The input could not be read or decoded."""


class OutputError(NvpipeError):
    """An output could not be written (exists, directory missing, codec unavailable)."""


class DeviceError(NvpipeError):
    """The requested device cannot run (no driver, PyNvVideoCodec or Triton missing)."""
