"""What the CPU path would gain without torch (issue 19): a measurement, not a product path.

    python bench/torch_free_probe.py [--pairs 5] [--size 360p] [--frames 240]

nvpipe's CPU stages pass torch tensors, so every CPU run imports torch (1.0-1.3 s on the
2-core VM) although, with the OpenVINO engine and the C kernels, no torch operator runs on a
frame. The probe is the same work as ``nvpipe run CLIP OUT --device cpu --ratio R -y -q``
on an 8-bit 4:2:0 clip with NumPy buffers only: PyAV decode, nvpipe's C kernels
(``kernels/cpu/nvpipe_cpu.c``: NV12 -> RGB and its downsample, the tail straight into NV12,
two row bands), nvpipe's cached OpenVINO IR and blob, libx264 with nvpipe's options, decode
and encode on their own threads at nice 19 as nvpipe's, buffers reused. It leaves out what
nvpipe adds around that (scene cuts, the output transaction, progress, audio). Every
argument of the kernels and the encoder is taken from a real nvpipe run first (``--capture``,
untimed), and the probe's output is checked to decode to nvpipe's frames exactly.

Then interleaved whole processes, rotating the order each round: the probe, ``nvpipe run``
and ``bench/plain_loop.py`` (the issue's plain loop) on ``bench/throughput.py``'s clip of
the size. Prints and writes (``--out``) one JSON: seconds per process, per-round ratios,
start-up (the same on the 4-frame clip).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO.parent / "shared" / "weights" / "rvm_mobilenetv3_fp32.onnx"


# -- the probe itself: no torch, no nvpipe import --------------------------------------------
def probe(clip: str, out_path: str, params: dict) -> None:
    import ctypes
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import av
    import numpy as np
    import openvino

    lib = ctypes.CDLL(params["library"])
    p, i, i64, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
    lib.nvp_yuv420_to_rgb.argtypes = [p, i, i64, i, i, p, p, i, i]
    lib.nvp_resize_bilinear.argtypes = [p, i, i, i, p, i, i, f, f, i, i]
    lib.nvp_tail_nv12.argtypes = [p, p, i, i, p, i, i, i, p, p, p, p, p, i64, i, i]
    lib.nvp_tail_nv12.restype = i
    pool = []

    def nice():  # nvpipe.engine.transfer.STAGE_NICE
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)

    def bands(function, rows, *args):
        if not pool:  # made by the decode thread, as nvpipe's: its workers inherit nice 19
            pool.append(ThreadPoolExecutor(2, thread_name_prefix="probe-cpu"))
        bounds = [rows * k // 2 for k in range(3)]
        list(pool[0].map(lambda k: function(*args, bounds[k], bounds[k + 1]), range(2)))

    def floats(values):
        return (ctypes.c_float * len(values))(*values)

    def ptr(array):
        return ctypes.c_void_p(array.ctypes.data)

    yuv, colour = floats(params["yuv"]), floats(params["colour"])
    rows = floats([v for row in params["nv12"] for v in row])
    ratio = params["ratio"]
    container = av.open(clip)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    H, W = stream.codec_context.height, stream.codec_context.width
    h, w = math.floor(H * ratio), math.floor(W * ratio)
    request = openvino.Core().compile_model(params["ir"], "CPU", params["openvino"]) \
        .create_infer_request()
    state, sh, sw = [], h, w
    for channels in (16, 20, 40, 64):
        sh, sw = math.ceil(sh / 2), math.ceil(sw / 2)
        state.append(np.zeros((1, channels, sh, sw), np.float32))
    output = av.open(out_path, "w")
    encoder = output.add_stream("libx264", rate=stream.average_rate, options=params["x264"])
    encoder.width, encoder.height, encoder.pix_fmt = W, H, "nv12"
    context = encoder.codec_context
    context.thread_count = params["threads"]
    context.colorspace, context.color_primaries, context.color_trc, context.color_range = \
        params["colour_tags"]

    ring = 12  # more than the queues hold: a buffer comes round after its consumer is done
    nv12_rows = H + (H + 1) // 2
    rgbs = [np.empty((3, H, W), np.float32) for _ in range(ring)]
    smalls = [np.empty((1, 3, h, w), np.float32) for _ in range(ring)]
    outs = [np.empty((nv12_rows, W), np.uint8) for _ in range(ring)]
    decoded, encoded = queue.Queue(4), queue.Queue(4)

    def decode():
        nice()
        nv12 = np.empty((nv12_rows, W), np.uint8)
        for n, frame in enumerate(container.decode(stream)):
            planes = frame.to_ndarray()  # I420 (H * 3 / 2, W) -> NV12
            nv12[:H] = planes[:H]
            chroma = planes[H:].reshape(2, (H + 1) // 2, W // 2)
            nv12[H:, 0::2], nv12[H:, 1::2] = chroma[0], chroma[1]
            rgb, small = rgbs[n % ring], smalls[n % ring]
            bands(lib.nvp_yuv420_to_rgb, H, ptr(nv12), 1, W, H, W, yuv, ptr(rgb))
            bands(lib.nvp_resize_bilinear, h, ptr(rgb), 3, H, W, ptr(small), h, w,
                  1 / ratio, 1 / ratio)
            decoded.put((frame.pts, rgb, small))
        decoded.put(None)

    def encode():
        nice()
        while (item := encoded.get()) is not None:
            frame = av.VideoFrame.from_ndarray(item[1], format="nv12")
            frame.pts, frame.time_base = item[0], stream.time_base
            for packet in encoder.encode(frame):
                output.mux(packet)
        for packet in encoder.encode():
            output.mux(packet)

    threads = [threading.Thread(target=decode), threading.Thread(target=encode)]
    for thread in threads:
        thread.start()
    n = 0
    while (item := decoded.get()) is not None:
        pts, rgb, small = item
        results = request.infer(dict(zip(("src_sm", "r1i", "r2i", "r3i", "r4i"),
                                          [small, *state])),
                                share_inputs=True, share_outputs=False).to_tuple()
        coeff_a, coeff_b = (np.ascontiguousarray(r[0]) for r in results[:2])
        state = list(results[2:])
        out = outs[n % ring]
        n += 1
        bands(lib.nvp_tail_nv12, (H + 1) // 2, ptr(coeff_a), ptr(coeff_b), h, w, ptr(rgb), H,
              W, params["kind"], colour, None, None, rows, ptr(out), W)
        encoded.put((pts, out))
    encoded.put(None)
    for thread in threads:
        thread.join()
    output.close()
    container.close()


# -- the arguments, from a real nvpipe run ------------------------------------------------------
def capture(clip: str, ratio: float, target: str) -> None:
    """Runs ``nvpipe run`` on ``clip`` and writes what it passed to its C kernels, OpenVINO
    and x264 to ``target`` (JSON)."""
    sys.path.insert(0, str(REPO))
    import nvpipe.engine.matting.openvino as ov_engine
    import nvpipe.sinks.pyav as pyav_sink
    from nvpipe.app.cli import main as cli
    from nvpipe.kernels import native
    from nvpipe.kernels._common import KIND_CODES

    got: dict = {"ratio": ratio}
    to_rgb, tail, add, compile_for = (native.yuv420_to_rgb, native.matting_tail_nv12,
                                      pyav_sink.PyAVSink._add_video_stream,
                                      ov_engine.compile_for)

    def yuv420_to_rgb(frame, coefficients, *args):
        got["yuv"] = [float(v) for v in coefficients]
        return to_rgb(frame, coefficients, *args)

    def matting_tail_nv12(args, coefficients, out):
        got.update(kind=KIND_CODES[args.output], colour=[float(v) for v in args.colour],
                   nv12=[[float(v) for v in row] for row in coefficients])
        return tail(args, coefficients, out)

    def add_video_stream(sink):
        stream = add(sink)
        context = stream.codec_context
        got.update(x264=dict(context.options), threads=context.thread_count,
                   colour_tags=[int(context.colorspace), int(context.color_primaries),
                                int(context.color_trc), int(context.color_range)])
        return stream

    def compiled(path, height, width, variant, threads):
        cache = ov_engine._blob_cache()
        got["ir"] = str(ov_engine.sized_ir(cache, path, height, width, variant))
        got["openvino"] = {**ov_engine.compile_config(threads), "CACHE_DIR": cache}
        return compile_for(path, height, width, variant, threads)

    native.yuv420_to_rgb, native.matting_tail_nv12 = yuv420_to_rgb, matting_tail_nv12
    pyav_sink.PyAVSink._add_video_stream = add_video_stream
    ov_engine.compile_for = compiled
    out = str(Path(target).with_suffix(".mp4"))
    cli(["run", clip, out, "--device", "cpu", "--ratio", str(ratio), "--weights",
         str(WEIGHTS), "--engine", "openvino", "-y", "-q"])
    got["library"] = native.library()._name
    Path(target).write_text(json.dumps(got))


# -- the comparison --------------------------------------------------------------------------------
def _frames(path: str):
    import av

    with av.open(path) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="rounds of the three processes")
    parser.add_argument("--size", choices=("360p", "720p", "1080p"), default="360p")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" /
                                             "torch-free-probe-360p.json"))
    parser.add_argument("--run", nargs=3, metavar=("CLIP", "OUT", "PARAMS"), help=argparse.SUPPRESS)
    parser.add_argument("--capture", nargs=3, metavar=("CLIP", "RATIO", "PARAMS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        probe(args.run[0], args.run[1], json.loads(Path(args.run[2]).read_text()))
        return 0
    if args.capture:
        capture(args.capture[0], float(args.capture[1]), args.capture[2])
        return 0
    sys.path.insert(0, str(REPO / "bench"))
    import numpy as np
    import throughput

    ratio = throughput.SIZES[args.size][2]
    cache = Path(throughput.DEFAULT_CACHE)
    clips = {n: throughput.cached_clip(str(throughput.DEFAULT_CLIP), cache, args.size, n)
             for n in (args.frames, 4)}
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / "nvpipe-torch-free-probe"
    scratch.mkdir(exist_ok=True)
    params = str(scratch / "params.json")
    python = sys.executable
    subprocess.run([python, __file__, "--capture", clips[4], str(ratio), params], check=True)
    throughput.compile_bytecode()

    def commands(clip: str, tag: str) -> dict[str, list[str]]:
        return {"probe": [python, __file__, "--run", clip, str(scratch / f"probe-{tag}.mp4"),
                          params],
                "nvpipe": [python, "-m", "nvpipe", "run", clip, str(scratch / f"nvpipe-{tag}.mp4"),
                           "--device", "cpu", "--ratio", str(ratio), "--weights", str(WEIGHTS),
                           "-y", "-q"],
                "plain": [python, "bench/plain_loop.py", clip, str(scratch / f"plain-{tag}.mp4"),
                          "--ratio", str(ratio), "--weights", str(WEIGHTS)]}

    report = {"command": "python bench/torch_free_probe.py " + " ".join(argv or sys.argv[1:]),
              "size": args.size, "frames": args.frames, "ratio": ratio,
              "load_before": os.getloadavg()[0]}
    for tag, n in (("startup", 4), ("run", args.frames)):
        runs = commands(clips[n], tag)
        _seconds(runs["probe"]), _seconds(runs["nvpipe"])  # untimed: caches warm
        seconds = {name: [] for name in runs}
        order = list(runs)
        for round_ in range(args.pairs if tag == "run" else max(3, args.pairs)):
            for name in order[round_ % 3:] + order[:round_ % 3]:
                seconds[name].append(round(_seconds(runs[name]), 3))
        report[tag] = {"seconds": seconds,
                       "median": {k: float(np.median(v)) for k, v in seconds.items()}}
        if tag == "run":
            a, b = _frames(str(scratch / "probe-run.mp4")), _frames(str(scratch / "nvpipe-run.mp4"))
            report["identical_output"] = len(a) == len(b) == n and all(
                np.array_equal(x, y) for x, y in zip(a, b))
            pairs = {"plain/nvpipe": ("plain", "nvpipe"), "plain/probe": ("plain", "probe"),
                     "nvpipe/probe": ("nvpipe", "probe")}
            report["round_ratios"] = {
                key: [round(x / y, 3) for x, y in zip(seconds[a], seconds[b])]
                for key, (a, b) in pairs.items()}
            report["median_ratio"] = {key: float(np.median(values))
                                      for key, values in report["round_ratios"].items()}
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report))
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
