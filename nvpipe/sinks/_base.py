"""What every sink shares."""


class SinkBase:
    """A sink used as a context manager finishes its file on success and aborts (a
    playable file of the frames so far, or nothing) when the block raises."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
