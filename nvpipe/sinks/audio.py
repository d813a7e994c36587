"""The input's audio carried into an output container, for every sink that writes one
(``PyAVSink`` and the NVENC sink's ``PacketMuxer``): one set of rules.

- Packets are copied untouched where the container takes the codec (WebM: Opus or Vorbis
  only); otherwise re-encoded (Opus for WebM, AAC elsewhere); where this FFmpeg has no such
  encoder, or the input's audio cannot be read, the stream is dropped with a note.
- ``start``: the input's seconds before the output's time 0 (a trimmed video,
  ``StreamInfo.start_offset``): earlier packets are dropped, the rest shifted.
- ``end``: the output's seconds where the audio stops (a trimmed range's end; None: at the
  ``finish`` time given).
- ``pump(t)`` moves every packet that starts before ``t`` seconds of the output (callers
  pump a little ahead of the video, so the muxer's interleaving buffer stays small);
  ``finish(end)`` the rest that start before ``end``, then closes the input.
- ``notes``: what was not copied, and why, for the run's summary (empty when all was).
"""

from __future__ import annotations

from typing import Optional

import av


class AudioCopy:
    def __init__(self, source: str, container, start: float = 0.0,
                 end: Optional[float] = None) -> None:
        self.notes: list[str] = []
        self._start, self._end = float(start), end
        self._routes = {}
        self._pending = None
        self._container = container
        self._packets = iter(())
        try:
            self._input = av.open(str(source), metadata_errors="ignore")
        except (av.FFmpegError, OSError) as error:
            self._input = None
            self.notes.append(f"audio not copied: cannot read {source} ({error})")
            return
        webm = container.format.name == "webm"
        supported = container.supported_codecs
        for stream in self._input.streams.audio:
            name = stream.codec_context.name
            try:
                if name in supported and (not webm or name in ("opus", "vorbis")):
                    self._routes[stream.index] = _CopyRoute(container.add_stream_from_template(stream))
                    continue
                encoder = "libopus" if webm else "aac"
                if encoder not in av.codecs_available:
                    self.notes.append(f"audio stream {stream.index} ({name}) not copied: this "
                                      f"FFmpeg has no {encoder} encoder")
                    continue
                self._routes[stream.index] = _EncodeRoute(stream, container, encoder)
            except (av.FFmpegError, ValueError) as error:  # a codec the container refuses
                self.notes.append(f"audio stream {stream.index} ({name}) not copied: {error}")
        streams = [s for s in self._input.streams.audio if s.index in self._routes]
        if streams and self._start > 0:
            try:  # near the start rather than read from the beginning; earlier packets dropped
                self._input.seek(int(self._start * av.time_base), backward=True)
            except av.FFmpegError:
                pass  # read from the beginning
        if streams:
            self._packets = self._input.demux(*streams)

    def pump(self, until: Optional[float]) -> None:
        """Moves the packets that start before ``until`` seconds of the output (None: all)."""
        if self._end is not None:
            until = self._end if until is None else min(until, self._end)
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            packet = self._pending
            if packet.size == 0 or (packet.pts is None and packet.dts is None):
                self._pending = None  # flush markers and untimed packets
                continue
            start = float((packet.pts if packet.pts is not None else packet.dts) * packet.time_base)
            start -= self._start
            if start < 0 and self._start:
                self._pending = None  # before the trimmed video's first frame
                continue
            if until is not None and start >= until:
                return
            if self._start:
                shift = round(self._start / packet.time_base)
                packet.pts = packet.pts - shift if packet.pts is not None else None
                packet.dts = packet.dts - shift if packet.dts is not None else None
            self._routes[packet.stream.index].send(packet, self._container)
            self._pending = None

    def finish(self, end: Optional[float]) -> None:
        """The packets that start before ``end`` (and before the ``end`` given at
        construction), the encoders flushed; then the input is closed."""
        try:
            self.pump(end)
            for route in self._routes.values():
                route.flush(self._container)
        finally:
            self.close()

    def close(self) -> None:
        if self._input is not None:
            self._input.close()
            self._input = None


class _CopyRoute:
    def __init__(self, out_stream) -> None:
        self.out_stream = out_stream

    def send(self, packet, container) -> None:
        packet.stream = self.out_stream
        container.mux(packet)

    def flush(self, container) -> None:
        pass


class _EncodeRoute:
    """Decode -> (the encoder's own resampling) -> encode, for codecs the container lacks."""

    def __init__(self, in_stream, container, encoder: str) -> None:
        self.in_stream = in_stream
        rate = 48000 if encoder == "libopus" else in_stream.codec_context.sample_rate
        self.out_stream = container.add_stream(encoder, rate=rate)
        layout = in_stream.codec_context.layout
        self.out_stream.layout = "stereo" if layout.nb_channels >= 2 else "mono"

    def send(self, packet, container) -> None:
        for frame in self.in_stream.codec_context.decode(packet):
            for out in self.out_stream.encode(frame):
                container.mux(out)

    def flush(self, container) -> None:
        for out in self.out_stream.encode(None):
            container.mux(out)


__all__ = ["AudioCopy"]
