"""Throughput of nvpipe against plain baselines, measured side by side in one run.

CPU (issue 2):  python bench/throughput.py --device cpu ../shared/footage/four_people_1080p.mp4
  1. network only, on decoded frames in memory: nvpipe's network (BN folded, fused tail)
     vs ONNX Runtime running the official export;
  2. end to end, file to file: `nvpipe run` vs a plain PyAV + ONNX Runtime loop (decode,
     network, composite over green, encode), both with the same encoder settings.
GPU (issue 4):  python bench/throughput.py --device cuda [CLIP]  (see bench/gpu_bench.py)

Prints a table and writes JSON (machine, versions, command) to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from nvpipe.threads import tune_for_pipeline  # noqa: E402

tune_for_pipeline()  # the same threading environment `nvpipe run` uses, before torch loads

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_CLIP = REPO.parent / "shared" / "footage" / "four_people_1080p.mp4"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "rvm_mobilenetv3_fp32.onnx"


def decode_rgb(path: str, limit: int) -> list[np.ndarray]:
    with av.open(path) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == limit:
                break
    return frames


def ort_session(weights: str):
    import onnxruntime

    return onnxruntime.InferenceSession(weights, providers=["CPUExecutionProvider"])


def ort_step(session, src: np.ndarray, state: list, ratio: float):
    """One frame through ONNX Runtime: src float32 [1,3,H,W] -> (fgr, pha, new state)."""
    fgr, pha, *state = session.run(None, {
        "src": src, "r1i": state[0], "r2i": state[1], "r3i": state[2], "r4i": state[3],
        "downsample_ratio": np.array([ratio], dtype=np.float32)})
    return fgr, pha, state


def zero_state() -> list[np.ndarray]:
    return [np.zeros((1, 1, 1, 1), dtype=np.float32)] * 4


def bench_network_cpu(frames: list[np.ndarray], weights: str, ratio: float,
                      repeats: int) -> dict:
    """Median ms per frame of each network over the same frames, recurrent state carried."""
    import rvm
    from nvpipe import kernels
    from nvpipe.convert import downsample

    sources = [torch.from_numpy(f).permute(2, 0, 1).float().div_(255) for f in frames]
    session = ort_session(weights)
    network = rvm.optimize_for_cpu(rvm.load(weights))

    def ours():
        state = [None] * 4
        with torch.inference_mode():
            for src in sources:
                coeff_a, coeff_b, *state = network.coefficients(
                    downsample(src, ratio)[None], *state, use_refiner=ratio != 1)
                # The tail as the pipeline runs it: composite over green, uint8, one pass.
                kernels.matting_tail(coeff_a[0], coeff_b[0], src, output="composite",
                                     background=(0.0, 1.0, 0.0), out_dtype=torch.uint8)

    def onnxruntime():
        state = zero_state()
        for src in sources:
            _, _, state = ort_step(session, src[None].numpy(), state, ratio)

    results = {}
    for name, body in (("nvpipe", ours), ("onnxruntime", onnxruntime)):
        body()  # warm-up: allocator, thread pools, first-call costs
    times = {"nvpipe": [], "onnxruntime": []}
    for _ in range(repeats):  # interleaved so both see the same machine load
        for name, body in (("nvpipe", ours), ("onnxruntime", onnxruntime)):
            started = time.perf_counter()
            body()
            times[name].append((time.perf_counter() - started) * 1000 / len(sources))
    for name, values in times.items():
        results[name] = {"ms_per_frame": statistics.median(values), "runs": values}
    return results


def baseline_loop(path: str, out: str, weights: str, ratio: float, encoder: dict) -> int:
    """The plain way: PyAV decode -> ONNX Runtime -> composite -> PyAV encode, one loop."""
    session = ort_session(weights)
    state = zero_state()
    green = np.array([0, 1, 0], dtype=np.float32).reshape(1, 3, 1, 1)
    frames = 0
    with av.open(path) as inp, av.open(out, "w") as container:
        video = inp.streams.video[0]
        stream = container.add_stream(encoder["codec"], rate=video.average_rate,
                                      options=encoder["options"])
        stream.codec_context.thread_count = encoder["threads"]
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        for frame in inp.decode(video):
            src = frame.to_ndarray(format="rgb24").transpose(2, 0, 1)[None].astype(np.float32)
            src /= 255
            fgr, pha, state = ort_step(session, src, state, ratio)
            composite = fgr * pha + green * (1 - pha)
            rgb = (composite[0].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
            out_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            out_frame.pts, out_frame.time_base = frame.pts, frame.time_base
            container.mux(stream.encode(out_frame))
            frames += 1
        container.mux(stream.encode())
    return frames


def bench_end_to_end_cpu(path: str, weights: str, ratio: float, repeats: int) -> dict:
    """fps of `nvpipe run` (network loaded beforehand) vs the plain loop, interleaved."""
    import rvm
    from nvpipe import Job, OutputSpec, run
    from nvpipe.sinks.pyav import DEFAULT_QUALITY, _encoder_threads

    network = rvm.optimize_for_cpu(rvm.load(weights))
    preset, crf = DEFAULT_QUALITY["h264"]
    encoder = {"codec": "libx264", "options": {"preset": preset, "crf": str(crf)},
               "threads": _encoder_threads()}
    fps = {"nvpipe": [], "pyav_onnxruntime_loop": []}
    with tempfile.TemporaryDirectory() as scratch:
        for attempt in range(repeats):
            out = os.path.join(scratch, f"nvpipe{attempt}.mp4")
            job = Job(input=path, outputs=[OutputSpec(out)], ratio=ratio, overwrite=True)
            started = time.perf_counter()
            result = run(job, network=network)
            fps["nvpipe"].append(result.frames / (time.perf_counter() - started))

            out = os.path.join(scratch, f"loop{attempt}.mp4")
            started = time.perf_counter()
            frames = baseline_loop(path, out, weights, ratio, encoder)
            fps["pyav_onnxruntime_loop"].append(frames / (time.perf_counter() - started))
    return {name: {"fps": statistics.median(values), "runs": values}
            for name, values in fps.items()} | {"encoder": encoder}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> dict:
    return {"host": platform.node(), "cpu": cpu_model(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "pyav": av.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", nargs="?", default=str(DEFAULT_CLIP))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--network-frames", type=int, default=12,
                        help="frames held in memory for the network-only timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", default="1", help="GPU: files decoded at once, e.g. 1,2,4,7 (bench/gpu_bench.py)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    device_only = argparse.ArgumentParser(add_help=False)
    device_only.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    if device_only.parse_known_args(argv)[0].device == "cuda":  # before the CPU parser: the GPU bench's --jobs is a list (1,2,4,7)
        sys.path.insert(0, str(REPO / "bench"))
        from gpu_bench import main as gpu_main

        return gpu_main(argv)
    args = parser.parse_args(argv)

    if not os.path.exists(args.clip):
        print(f"throughput: no clip at {args.clip}", file=sys.stderr)
        return 2
    frames = decode_rgb(args.clip, args.network_frames)
    network = bench_network_cpu(frames, args.weights, args.ratio, args.repeats)
    end_to_end = bench_end_to_end_cpu(args.clip, args.weights, args.ratio, args.repeats)

    report = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO), *(argv or sys.argv[1:])]),
        "clip": os.path.basename(args.clip), "ratio": args.ratio, "machine": machine(),
        "network_only": network, "end_to_end": end_to_end,
        "ratios": {
            "network_onnxruntime_over_nvpipe":
                network["onnxruntime"]["ms_per_frame"] / network["nvpipe"]["ms_per_frame"],
            "end_to_end_nvpipe_over_loop":
                end_to_end["nvpipe"]["fps"] / end_to_end["pyav_onnxruntime_loop"]["fps"],
        },
    }
    rows = [
        ("network only, nvpipe", f"{network['nvpipe']['ms_per_frame']:.1f} ms/frame"),
        ("network only, ONNX Runtime", f"{network['onnxruntime']['ms_per_frame']:.1f} ms/frame"),
        ("end to end, nvpipe run", f"{end_to_end['nvpipe']['fps']:.2f} fps"),
        ("end to end, PyAV + ORT loop", f"{end_to_end['pyav_onnxruntime_loop']['fps']:.2f} fps"),
        ("nvpipe / loop (end to end)", f"{report['ratios']['end_to_end_nvpipe_over_loop']:.2f}x"),
        ("ORT / nvpipe (network ms)", f"{report['ratios']['network_onnxruntime_over_nvpipe']:.2f}x"),
    ]
    os.makedirs(args.out, exist_ok=True)
    target = os.path.join(args.out, f"cpu-{os.cpu_count()}core.json")
    with open(target, "w") as handle:
        json.dump(report, handle, indent=2)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"written {os.path.relpath(target, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
