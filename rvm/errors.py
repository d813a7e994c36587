"""The one error type of the rvm package."""

try:  # rvm ships inside nvpipe's distribution; its CLI prints NvpipeError as one line.
    from nvpipe.errors import NvpipeError as _UserError
except ImportError:  # rvm used on its own
    _UserError = Exception


class WeightsError(_UserError):
    """Weights could not be found, fetched, verified or read (one line, names the file)."""
