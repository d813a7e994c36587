"""Runnable examples of embedding nvpipe (``python -m nvpipe.examples.<name> --help``)."""
