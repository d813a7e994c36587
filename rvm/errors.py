"""The one error type of the rvm package (which stands alone: it imports nothing of nvpipe)."""


class WeightsError(Exception):
    """Weights could not be found, fetched, verified or read (one line, names the file).

    nvpipe's command line prints it as one line, like its own errors
    (``nvpipe.errors.user_errors``)."""
