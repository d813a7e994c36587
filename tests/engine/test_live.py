"""Live sources and stream outputs: pipes, loopback UDP, pacing, key and fill, cuts.

Everything runs on this machine over 127.0.0.1. The UDP tests stream real footage in real
time with ``bench/stream_clip.py`` (remuxed MPEG-TS, as ``ffmpeg -re -c copy`` would).
"""

import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import CLIP_FRAMES, count_frames, footage_clip, load_bench_script

from nvpipe.engine.pacing import (FILE_PACING, LIVE_PACING, LatencyLog, LatestFrames,
                                  RecordBuffer, choose_pacing)
from nvpipe.sources.live import PipeReader, locate_input


# -- what an input names -----------------------------------------------------------------
def test_locate_input_kinds(tmp_path):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    cases = {
        "-": ("stdin", False), "pipe:0": ("stdin", False), "/dev/stdin": ("stdin", False),
        str(fifo): ("pipe", False),
        "udp://127.0.0.1:5000?fifo_size=100": ("url", True), "srt://host:9000": ("url", True),
        "rtmp://host/live/key": ("url", True), "rtsp://cam/stream": ("url", True),
        "http://host/clip.mp4": ("url", False), "https://host/live.m3u8": ("url", False),
        "/dev/video0": ("device", True),
        str(video): ("file", False), f"file://{video}": ("file", False),
    }
    for text, (kind, live) in cases.items():
        location = locate_input(text)
        assert (location.kind, location.live) == (kind, live), text
    assert locate_input("http://host/live.m3u8", live=True).live
    assert not locate_input("udp://127.0.0.1:5000", live=False).live
    assert locate_input("0", input_format="avfoundation").kind == "device"


def test_latest_frames_drops_the_oldest():
    mailbox = LatestFrames(1)
    for item in range(5):
        mailbox.put(item)
    stop = threading.Event()
    assert mailbox.get(stop) == 4
    assert (mailbox.received, mailbox.dropped) == (5, 4)
    mailbox.put(5)
    mailbox.close()
    assert list(mailbox.drain(stop)) == [5]
    assert mailbox.get(stop) is None  # closed and empty: the end, not a wait


def test_latency_log_percentiles_and_rate():
    log = LatencyLog()
    assert log.percentiles() is None and log.rate() == 0.0
    now = time.monotonic()
    for i in range(100):
        log.seconds.append(0.01 * (i + 1))
    log.first_arrival, log.last_written = now - 10.0, now
    p50, p99 = log.percentiles()
    assert p50 == pytest.approx(0.505, abs=1e-6) and p99 == pytest.approx(0.9901, abs=1e-6)  # linear interpolation
    assert log.rate() == pytest.approx(10.0)


def test_pipe_reader_ends_on_timeout_and_on_stop():
    read_end, write_end = os.pipe()
    try:
        reader = PipeReader(read_end, timeout=0.3)
        started = time.monotonic()
        assert reader.read(100) == b""
        assert reader.timed_out and 0.25 < time.monotonic() - started < 2.0
        os.write(write_end, b"abc")
        assert PipeReader(read_end, timeout=0.3).read(100) == b"abc"
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        stopped = PipeReader(read_end, stop=stop)  # no timeout: only the stop ends it
        assert stopped.read(100) == b"" and not stopped.timed_out
    finally:
        os.close(read_end)
        os.close(write_end)


def test_pacing_chosen_from_the_input_and_the_outputs(tmp_path, monkeypatch):
    """A file input waits; a live input recorded to files keeps every frame (buffered up
    to the stated bound); a live input to a live output (standard output, a URL, a named
    pipe), or under --live, drops to keep latency bounded."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    assert choose_pacing(False, ["out.mp4"]) is FILE_PACING
    assert choose_pacing(False, ["-"]) is FILE_PACING  # --no-live, or a file input
    recording = choose_pacing(True, ["out.mp4", "frames/", os.devnull])
    assert recording.mode == "record" and recording.live and not recording.drops
    assert recording.buffer_bytes == 1024 << 20
    for live_output in ("-", "udp://127.0.0.1:6000", str(fifo)):
        assert choose_pacing(True, ["out.mp4", live_output]) is LIVE_PACING, live_output
    assert choose_pacing(True, ["out.mp4"], live=True) is LIVE_PACING
    monkeypatch.setenv("NVPIPE_RECORD_BUFFER_MB", "64")
    assert choose_pacing(True, ["out.mp4"]).buffer_bytes == 64 << 20
    monkeypatch.setenv("NVPIPE_RECORD_BUFFER_MB", "lots")
    with pytest.raises(ValueError, match="NVPIPE_RECORD_BUFFER_MB"):
        choose_pacing(True, ["out.mp4"])


def test_record_buffer_keeps_everything_up_to_its_bound():
    frame = np.zeros(1000, np.uint8)
    buffer = RecordBuffer(max_bytes=3500)
    for _ in range(5):
        buffer.put(frame)
    stop = threading.Event()
    assert (buffer.received, buffer.dropped, buffer.held, buffer.peak) == (5, 2, 3000, 3000)
    assert buffer.get(stop) is frame and buffer.held == 2000
    buffer.put(frame)  # room again
    buffer.close()
    assert len(list(buffer.drain(stop))) == 3 and buffer.dropped == 2


def test_srt_is_one_line_naming_libsrt(tmp_path):
    done = subprocess.run(_nvpipe("run", "srt://127.0.0.1:9", tmp_path / "out.mp4"),
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 3 and len(lines) == 1, done.stderr
    assert "libsrt" in lines[0] and "ffmpeg -i srt://127.0.0.1:9" in lines[0]


# -- helpers --------------------------------------------------------------------------------
def _free_udp_port() -> int:
    return load_bench_script("stream_clip").free_udp_port()


def _nvpipe(*args) -> list[str]:
    return [sys.executable, "-m", "nvpipe.app.cli", *map(str, args)]


class _Sender(threading.Thread):
    """Streams ``clip`` to ``url`` in real time on a thread (bench/stream_clip.py)."""

    def __init__(self, clip, url, *, loops=1, start_delay=0.0):
        super().__init__(daemon=True)
        self.clip, self.url, self.loops, self.start_delay = clip, url, loops, start_delay
        self.stop = threading.Event()
        self.sent = None

    def run(self):
        stream_clip = load_bench_script("stream_clip").stream_clip
        self.sent = stream_clip(str(self.clip), self.url, loops=self.loops, stop=self.stop,
                                start_delay=self.start_delay)


@pytest.fixture(scope="module")
def live_clip(tmp_path_factory):
    """2 s of real footage (48 frames at 24 fps) at 144x256: a live stream's content."""
    return footage_clip(tmp_path_factory, "person_fullbody_360x640.mp4", "person.mp4",
                        frames=48, size=(144, 256), timed=True)


# -- pipes --------------------------------------------------------------------------------
def _remux(source: Path, target: Path, container_format: str) -> Path:
    with av.open(str(source)) as inp, av.open(str(target), "w", format=container_format) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(video=0):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target


def test_stdin_to_stdout_nut_frames_decoded_and_counted(small_clip, weights_env, tmp_path):
    """... | nvpipe run - - --format nut | (decode and count): MPEG-TS through a real pipe
    in, RGBA rawvideo in NUT out."""
    stream = _remux(small_clip, tmp_path / "in.ts", "mpegts").read_bytes()
    process = subprocess.Popen(_nvpipe("run", "-", "-", "--format", "nut", "--quiet",
                                       "--ratio", "0.5"),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    out, err = process.communicate(stream, timeout=300)
    assert process.returncode == 0, err.decode()
    (tmp_path / "out.nut").write_bytes(out)
    with av.open(str(tmp_path / "out.nut")) as container:
        frames = [f.to_ndarray() for f in container.decode(video=0)]
        assert container.format.name == "nut"
    assert len(frames) == CLIP_FRAMES
    assert frames[0].shape == (256, 144, 4)  # RGBA: the alpha kept
    alpha = np.stack([f[..., 3] for f in frames])
    assert alpha.min() < 20 and alpha.max() > 235  # background and person both present


def test_stdin_redirected_from_an_mp4_with_its_index_at_the_end(small_clip, weights_env,
                                                                 tmp_path):
    """`< clip.mp4` is seekable and reads; the same bytes through a pipe cannot (the index
    is at the end), and the error says so in one line."""
    with open(small_clip, "rb") as data:
        done = subprocess.run(_nvpipe("run", "-", tmp_path / "out.mp4", "--quiet",
                                      "--ratio", "0.5"), stdin=data, capture_output=True,
                              text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert count_frames(tmp_path / "out.mp4") == CLIP_FRAMES
    process = subprocess.Popen(_nvpipe("run", "-", tmp_path / "piped.mp4"),
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    _, err = process.communicate(small_clip.read_bytes(), timeout=120)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert process.returncode == 3 and len(lines) == 1, err  # the input is bad
    assert "cannot be read from a pipe" in lines[0]
    assert not (tmp_path / "piped.mp4").exists()


def test_named_pipe_input_and_y4m_output(small_clip, weights_env, tmp_path):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen(_nvpipe("run", fifo, "-", "--format", "y4m", "--quiet",
                                       "--ratio", "0.5"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stream = _remux(small_clip, tmp_path / "in.mkv", "matroska").read_bytes()
    with open(fifo, "wb") as pipe:  # opens when nvpipe opens the other end
        pipe.write(stream)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()
    (tmp_path / "out.y4m").write_bytes(out)
    assert out.startswith(b"YUV4MPEG2 W144 H256")
    assert count_frames(tmp_path / "out.y4m") == CLIP_FRAMES


def test_stdout_needs_a_format_and_y4m_refuses_alpha(small_clip, weights_env):
    for args, message in (((), "writing to standard output needs --format"),
                          (("--format", "y4m", "--type", "rgba"), "y4m carries no alpha"),
                          (("--format", "avi"), "is not a stream format")):
        done = subprocess.run(_nvpipe("run", small_clip, "-", *args), capture_output=True,
                              text=True, timeout=120)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 1 and len(lines) == 1 and message in lines[0], done.stderr
        assert done.stdout == ""


def test_silent_pipe_ends_after_timeout_with_one_line(weights_env, tmp_path):
    read_end, write_end = os.pipe()
    try:
        started = time.monotonic()
        done = subprocess.run(_nvpipe("run", "-", tmp_path / "out.mp4", "--timeout", "1"),
                              stdin=read_end, capture_output=True, text=True, timeout=120)
    finally:
        os.close(read_end)
        os.close(write_end)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 3 and len(lines) == 1, done.stderr
    assert "no data from standard input within 1 s" in lines[0]
    assert time.monotonic() - started < 60
    assert list(tmp_path.iterdir()) == []


# -- loopback UDP -------------------------------------------------------------------------
@pytest.mark.slow
def test_udp_stream_converted_live_until_it_ends(live_clip, weights_env, tmp_path):
    """--live: a sender streams 6 s of real footage over UDP in real time while nvpipe
    converts it, dropping what it cannot keep up with (what is sent before nvpipe listens
    is lost, as on a real network); the stream's end (no data for --timeout) ends the run
    with a playable file."""
    port = _free_udp_port()
    out = tmp_path / "out.mp4"
    process = subprocess.Popen(_nvpipe("run", f"udp://127.0.0.1:{port}?fifo_size=1000000"
                                       "&overrun_nonfatal=1", out, "--timeout", "3",
                                       "--ratio", "0.5", "--live"),
                               stderr=subprocess.PIPE, text=True)
    sender = _Sender(live_clip, f"udp://127.0.0.1:{port}", loops=3, start_delay=0.5)
    sender.start()
    _, stderr = process.communicate(timeout=300)
    sender.join(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert sender.sent == 3 * 48
    written = count_frames(out)
    assert 0 < written <= 3 * 48
    live_line = next(line for line in stderr.splitlines() if line.startswith("nvpipe: live:"))
    assert f"{written} frames written" in live_line and "latency p50" in live_line
    assert "ended after 3 s without data" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def _listening(port: int) -> bool:
    """Whether something (nvpipe) holds the UDP port: binding it fails then."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def test_udp_stream_recorded_to_a_file_keeps_every_frame(live_clip, weights_env, tmp_path):
    """nvpipe run udp://... out.mp4 at the default settings: 3 loops of 48 frames sent in
    real time (24 fps, faster than this CPU mattes) once nvpipe listens; every frame sent is
    in the file, decoded and counted, and the summary says none was dropped."""
    port = _free_udp_port()
    out = tmp_path / "out.mp4"
    process = subprocess.Popen(_nvpipe("run", f"udp://127.0.0.1:{port}", out, "--timeout", "3"),
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _listening(port) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert _listening(port), "nvpipe never opened the stream"
        sent = load_bench_script("stream_clip").stream_clip(str(live_clip),
                                                            f"udp://127.0.0.1:{port}", loops=3)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert sent == 3 * 48
    assert count_frames(out) == sent
    live_line = next(line for line in stderr.splitlines() if line.startswith("nvpipe: live:"))
    assert f"{sent} frames written, 0 dropped of {sent} received" in live_line
    assert "recorded, every frame kept" in live_line


def test_recording_beyond_its_buffer_says_what_was_dropped(live_clip, weights_env, tmp_path,
                                                           monkeypatch):
    """A buffer of 0.2 MiB (3 frames of 144x256) and a network slowed to 4 fps: frames
    arriving while it is full are dropped, counted, and the summary says so."""
    from nvpipe import Job, OutputSpec, run
    from nvpipe.engine.matting import MattingStage

    original = MattingStage.__call__
    monkeypatch.setattr(MattingStage, "__call__",
                        lambda self, *a, **k: (time.sleep(0.25), original(self, *a, **k))[1])
    monkeypatch.setenv("NVPIPE_RECORD_BUFFER_MB", "0.2")
    port = _free_udp_port()
    sender = _Sender(live_clip, f"udp://127.0.0.1:{port}", loops=1, start_delay=0.5)
    sender.start()
    result = run(Job(input=f"udp://127.0.0.1:{port}", outputs=[OutputSpec(str(tmp_path / "o.mp4"))],
                     ratio=0.5, timeout=3))
    sender.join(timeout=30)
    live = result.live
    assert live.mode == "record" and live.dropped > 0
    assert live.received == live.written + live.dropped
    assert live.written == result.frames == count_frames(tmp_path / "o.mp4")
    assert result.decisions["pacing"] == "record"
    assert "NVPIPE_RECORD_BUFFER_MB" in live.describe() and f"{live.dropped} frames" in live.describe()


def test_live_example_fed_a_file_keeps_every_frame(small_clip, weights_env, tmp_path):
    """python -m nvpipe.examples.live_matte clip.mp4 -: a file waits for the matting, so
    every frame comes out (it used to keep 2 of 50)."""
    process = subprocess.run([sys.executable, "-m", "nvpipe.examples.live_matte", str(small_clip),
                              "-", "--ratio", "0.5"], capture_output=True, timeout=300)
    assert process.returncode == 0, process.stderr.decode()
    (tmp_path / "out.nut").write_bytes(process.stdout)
    assert count_frames(tmp_path / "out.nut") == CLIP_FRAMES
    summary = process.stderr.decode().strip().splitlines()[-1]
    assert summary.startswith(f"matted {CLIP_FRAMES} frames, dropped 0 of {CLIP_FRAMES}")


def test_udp_without_sender_fails_with_one_line(weights_env, tmp_path):
    port = _free_udp_port()
    done = subprocess.run(_nvpipe("run", f"udp://127.0.0.1:{port}", tmp_path / "out.mp4",
                                  "--timeout", "1"), capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 3 and len(lines) == 1, done.stderr  # the input is bad
    assert f"no data from udp://127.0.0.1:{port} within 1 s" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigterm_mid_stream_leaves_a_playable_file(live_clip, weights_env, tmp_path):
    port = _free_udp_port()
    out = tmp_path / "out.mp4"
    sender = _Sender(live_clip, f"udp://127.0.0.1:{port}", loops=20, start_delay=1.0)
    process = subprocess.Popen(_nvpipe("run", f"udp://127.0.0.1:{port}?fifo_size=1000000"
                                       "&overrun_nonfatal=1", out, "--ratio", "0.5"),
                               stderr=subprocess.PIPE, text=True)
    sender.start()
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # the encoder has written something
            if any(".partial" in p.name and p.stat().st_size > 2048 for p in tmp_path.iterdir()):
                break
            time.sleep(0.1)
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        sender.stop.set()
        sender.join(timeout=30)
    assert process.returncode == 143, stderr
    assert "terminated after" in stderr and "Traceback" not in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert count_frames(out) > 0


def test_slow_network_drops_frames_and_latency_stays_bounded(live_clip, weights_env, tmp_path,
                                                             monkeypatch):
    """--live: the network slowed to 0.25 s a frame (4 fps) on a 24 fps live stream: frames
    are dropped, oldest first, and no frame waits longer than the frames in flight allow."""
    from nvpipe import Job, OutputSpec, run
    from nvpipe.engine.matting import MattingStage

    slow_call = 0.25
    original = MattingStage.__call__

    def slowed(self, *args, **kwargs):
        time.sleep(slow_call)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MattingStage, "__call__", slowed)
    port = _free_udp_port()
    sender = _Sender(live_clip, f"udp://127.0.0.1:{port}", loops=3, start_delay=0.5)
    sender.start()
    job = Job(input=f"udp://127.0.0.1:{port}?fifo_size=1000000&overrun_nonfatal=1",
              outputs=[OutputSpec(str(tmp_path / "out.mp4"))], ratio=0.5, timeout=3, live=True)
    reports = []
    result = run(job, live_report=reports.append)
    sender.join(timeout=30)
    live = result.live
    assert live is not None and sender.sent == 144
    assert live.dropped > 0 and live.written == result.frames == count_frames(tmp_path / "out.mp4")
    assert live.received == live.written + live.dropped
    assert live.fps < 1 / slow_call + 0.5
    # Each frame waits at most for the frames in flight ahead of it, each a network call
    # (plus conversion and encoding: 2x margin); a growing queue would reach seconds.
    bound = 2 * LIVE_PACING.frames_in_flight(1) * slow_call
    assert live.latency_p99 < bound, (live.latency_p99, bound)
    assert reports and all(r.written <= live.written for r in reports)


def test_file_input_never_drops(small_clip, weights_env, tmp_path, monkeypatch):
    from nvpipe import Job, OutputSpec, run
    from nvpipe.engine.matting import MattingStage

    original = MattingStage.__call__
    monkeypatch.setattr(MattingStage, "__call__",
                        lambda self, *a, **k: (time.sleep(0.1), original(self, *a, **k))[1])
    result = run(Job(input=str(small_clip), outputs=[OutputSpec(str(tmp_path / "out.mp4"))],
                     ratio=0.5))
    assert result.live is None and result.frames == CLIP_FRAMES
    assert count_frames(tmp_path / "out.mp4") == CLIP_FRAMES


@pytest.mark.slow
def test_stream_output_over_udp_received_and_counted(small_clip, weights_env):
    """nvpipe run clip udp://...: a receiver on the loopback decodes the MPEG-TS it sends."""
    port = _free_udp_port()
    counted = {}

    def receive():
        with av.open(f"udp://127.0.0.1:{port}?fifo_size=1000000&overrun_nonfatal=1",
                     timeout=(60, 5)) as container:
            frames = []
            try:
                for frame in container.decode(video=0):
                    frames.append(frame)
            except av.ExitError:  # the sender finished: no data for 5 s
                pass
            counted["frames"] = len(frames)
            counted["format"] = container.format.name

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    time.sleep(0.5)
    done = subprocess.run(_nvpipe("run", small_clip, f"udp://127.0.0.1:{port}", "--quiet",
                                  "--ratio", "0.5"), capture_output=True, text=True, timeout=300)
    receiver.join(timeout=60)
    assert done.returncode == 0, done.stderr
    assert counted == {"frames": CLIP_FRAMES, "format": "mpegts"}


# -- key and fill -------------------------------------------------------------------------
def test_key_and_fill(small_clip, weights_env, tmp_path):
    """--key writes the alpha as grey beside the fill (the foreground), frame for frame:
    the key is the --alpha output exactly."""
    fill, key, alpha = tmp_path / "fill.mp4", tmp_path / "key.mp4", tmp_path / "alpha.mp4"
    done = subprocess.run(_nvpipe("run", small_clip, fill, "--key", key, "--alpha", alpha,
                                  "--quiet", "--ratio", "0.5"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    def planes(path, fmt):
        with av.open(str(path)) as container:
            return [f.to_ndarray(format=fmt) for f in container.decode(video=0)]

    keys, alphas = planes(key, "gray"), planes(alpha, "gray")
    fills = planes(fill, "rgb24")
    assert len(keys) == len(fills) == CLIP_FRAMES
    assert all(np.array_equal(k, a) for k, a in zip(keys, alphas))
    # The fill is the foreground: where the key is clear, not the green of a composite.
    key_stack, fill_stack = np.stack(keys), np.stack(fills).astype(int)
    clear = key_stack < 10
    green = (fill_stack[..., 1] > 200) & (fill_stack[..., 0] < 60) & (fill_stack[..., 2] < 60)
    assert clear.mean() > 0.2 and green[clear].mean() < 0.05


# -- scene cuts -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def joined_clip(tmp_path_factory):
    """10 frames of the 1080p clip (centre-cropped to portrait), then 10 of the portrait
    clip, at 144x256: a hard cut at frame 10. Also the second shot alone."""
    from conftest import SHARED

    a_source = SHARED / "footage" / "four_people_1080p.mp4"
    b_source = SHARED / "footage" / "person_fullbody_360x640.mp4"
    if not (a_source.exists() and b_source.exists()):
        pytest.skip("the shared footage is absent")
    folder = tmp_path_factory.mktemp("cuts")
    width, height = 144, 256
    joined, alone = folder / "joined.mp4", folder / "shot_b.mp4"

    def shots():
        with av.open(str(a_source)) as a:
            for index, frame in enumerate(a.decode(video=0)):
                if index == 10:
                    break
                crop_w = frame.height * width // height
                picture = frame.to_ndarray(format="rgb24")
                left = (frame.width - crop_w) // 2
                yield "a", av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(picture[:, left:left + crop_w]), format="rgb24")
        with av.open(str(b_source)) as b:
            for index, frame in enumerate(b.decode(video=0)):
                if index == 10:
                    break
                yield "b", frame

    with av.open(str(joined), "w") as out_joined, av.open(str(alone), "w") as out_alone:
        streams = []
        for out in (out_joined, out_alone):
            stream = out.add_stream("libx264", rate=24, options={"crf": "8", "preset": "ultrafast"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            streams.append(stream)
        counts = [0, 0]  # frames written to each file: their timestamps in 1/24 s
        for shot, frame in shots():
            for which, (out, stream) in enumerate(zip((out_joined, out_alone), streams)):
                if which == 1 and shot != "b":
                    continue
                picture = frame.reformat(width=width, height=height, format="yuv420p")
                picture.pts, picture.time_base = counts[which], Fraction(1, 24)
                counts[which] += 1
                out.mux(stream.encode(picture))
        out_joined.mux(streams[0].encode())
        out_alone.mux(streams[1].encode())
    return joined, alone


def _alpha_pngs(folder: Path) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p), dtype=np.float32) / 255 for p in sorted(folder.iterdir())]


@pytest.mark.slow
def test_cut_resets_the_memory_in_the_runner(joined_clip, weights_env, tmp_path):
    """With the reset, the frames after the cut are the second shot's alpha from a fresh
    start; without it they differ (the first shot's memory)."""
    from nvpipe import Job, OutputSpec, run

    joined, alone = joined_clip
    outcomes = {}
    for name, source, cut_reset in (("reset", joined, True), ("no_reset", joined, False),
                                    ("fresh", alone, True)):
        folder = tmp_path / name
        result = run(Job(input=str(source), outputs=[OutputSpec(str(folder) + "/", kind="alpha")],
                         ratio=0.5, cut_reset=cut_reset))
        outcomes[name] = (result.cuts, _alpha_pngs(folder))
    assert outcomes["reset"][0] == [10] and outcomes["no_reset"][0] == [] \
        and outcomes["fresh"][0] == []
    fresh = outcomes["fresh"][1]
    after_reset = outcomes["reset"][1][10:]
    after_no_reset = outcomes["no_reset"][1][10:]
    mad_reset = np.mean([np.abs(a - f).mean() for a, f in zip(after_reset, fresh)])
    mad_no_reset = np.mean([np.abs(a - f).mean() for a, f in zip(after_no_reset, fresh)])
    # The second shot's frames decode the same in both files only up to H.264 noise (crf 8).
    assert mad_reset < 2 / 255, mad_reset
    assert mad_no_reset > 1.5 * mad_reset, (mad_reset, mad_no_reset)


@pytest.mark.slow
def test_session_detects_cuts_and_measures_latency(joined_clip, weights_env):
    from nvpipe import MattingSession

    joined, _ = joined_clip
    with av.open(str(joined)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    session = MattingSession(ratio=0.5)
    for frame in frames[:12]:
        session.process(frame)
    session.process(torch.from_numpy(frames[12]).permute(2, 0, 1))  # a tensor works too
    assert session.cuts == [10] and session.frames == 13
    p50, p99 = session.latency()
    assert 0 < p50 <= p99 < 30
    off = MattingSession(ratio=0.5, cut_reset=False)
    for frame in frames[:12]:
        off.process(frame)
    assert off.cuts == []


def test_live_example_mattes_a_udp_stream_to_stdout(live_clip, weights_env, tmp_path):
    """python -m nvpipe.examples.live_matte udp://... - : RGBA NUT on standard output."""
    port = _free_udp_port()
    process = subprocess.Popen([sys.executable, "-m", "nvpipe.examples.live_matte",
                                f"udp://127.0.0.1:{port}?fifo_size=1000000&overrun_nonfatal=1",
                                "-", "--ratio", "0.5", "--timeout", "3"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Sent once the example listens (its start-up is seconds on a busy machine: a stream
    # sent before that is lost, and the example's open then times out).
    deadline = time.monotonic() + 120
    while not _listening(port) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    sender = _Sender(live_clip, f"udp://127.0.0.1:{port}", loops=2)
    sender.start()
    out, err = process.communicate(timeout=300)
    sender.join(timeout=30)
    assert process.returncode == 0, err.decode()
    (tmp_path / "out.nut").write_bytes(out)
    with av.open(str(tmp_path / "out.nut")) as container:
        frames = [f.to_ndarray() for f in container.decode(video=0)]
    summary = err.decode().strip().splitlines()[-1]
    assert summary.startswith(f"matted {len(frames)} frames") and "matting p50" in summary
    assert 0 < len(frames) <= 2 * 48 and frames[0].shape == (256, 144, 4)


def test_input_format_and_options_reach_the_demuxer(small_clip, weights_env, tmp_path):
    """--input-format names the demuxer (a wrong one fails in one line), and
    --input-option goes to it (mpegts's resync_size)."""
    stream = _remux(small_clip, tmp_path / "in.ts", "mpegts").read_bytes()
    ok = subprocess.run(_nvpipe("run", "-", tmp_path / "out.mp4", "--input-format", "mpegts",
                                "--input-option", "resync_size=65536", "--quiet",
                                "--ratio", "0.5"),
                        input=stream, capture_output=True, timeout=300)
    assert ok.returncode == 0, ok.stderr.decode()
    assert count_frames(tmp_path / "out.mp4") == CLIP_FRAMES
    wrong = subprocess.run(_nvpipe("run", "-", tmp_path / "bad.mp4", "--input-format", "nut"),
                           input=stream, capture_output=True, timeout=120)
    lines = [line for line in wrong.stderr.decode().splitlines() if line.strip()]
    assert wrong.returncode == 3 and len(lines) == 1 and "not a readable video stream" in lines[0]
    bad_option = subprocess.run(_nvpipe("run", "-", tmp_path / "bad.mp4", "--input-option",
                                        "novalue"), input=b"", capture_output=True, timeout=60)
    assert bad_option.returncode == 2 and b"key=value" in bad_option.stderr
