"""The plain loop a CPU user would write: nvpipe's yardstick (issue 19).

    python bench/plain_loop.py IN.mp4 OUT.mp4 [--ratio R] [--weights rvm_mobilenetv3_fp32.onnx]

PyAV decodes to rgb24; the official ONNX model runs in ONNX Runtime with its default
session options (its default threads, spinning as it does by default); the composite over
green is NumPy float32; PyAV encodes with libx264 at its defaults (no preset, crf or thread
count given: x264's medium, crf 23, its own threads). Nothing here is tuned: it is the
loop as written from the model's README. Prints one JSON line: frames, seconds, fps.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "rvm_mobilenetv3_fp32.onnx"


def plain_loop(source: str, target: str, weights: str, ratio: float) -> int:
    session = ort.InferenceSession(weights, providers=["CPUExecutionProvider"])
    rec = [np.zeros([1, 1, 1, 1], dtype=np.float32)] * 4
    downsample_ratio = np.array([ratio], dtype=np.float32)
    green = np.array([0, 1, 0], dtype=np.float32).reshape(1, 3, 1, 1)
    frames = 0
    with av.open(source) as inp, av.open(target, "w") as out:
        video = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        for frame in inp.decode(video):
            src = frame.to_ndarray(format="rgb24").transpose(2, 0, 1)[None].astype(np.float32) / 255
            fgr, pha, *rec = session.run(None, {"src": src, "r1i": rec[0], "r2i": rec[1],
                                                "r3i": rec[2], "r4i": rec[3],
                                                "downsample_ratio": downsample_ratio})
            com = fgr * pha + green * (1 - pha)
            rgb = (com[0].transpose(1, 2, 0) * 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
            frames += 1
        for packet in stream.encode():
            out.mux(packet)
    return frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    frames = plain_loop(args.input, args.output, args.weights, args.ratio)
    seconds = time.perf_counter() - started
    print(json.dumps({"frames": frames, "seconds": round(seconds, 3),
                      "fps": round(frames / seconds, 3) if seconds else 0.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
