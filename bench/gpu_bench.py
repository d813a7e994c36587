"""GPU measurements for issue 4's "Speed" section: the network, NVDEC decode, 4K memory,
and ``nvpipe.run`` end to end (file to file).

Functions return plain dicts; ``main()`` runs them all, prints a table and writes JSON with
the GPU name, driver and command to ``bench/results/``. Without a CUDA GPU ``main()`` exits
with status 2. ``python bench/throughput.py --device cuda [CLIP] [options]`` hands its own
command line to ``main()``, so the positional clip and ``--device``/``--repeats``/
``--network-frames`` are accepted here too.

    python -m bench.gpu_bench [--clip FILE] [--weights FILE] [--frames N] [--jobs 1,2,4]

Without ``--clip`` it generates 1920x1080 (ratio 0.25) and 3840x2160 (ratio 0.125) H.264
clips with PyAV's libx264 (a moving gradient, ultrafast preset: seconds on the host CPU).
Timings use CUDA events around N iterations after a warm-up, and synchronise only at the
ends of a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"1080p": (1920, 1080, 0.25), "2160p": (3840, 2160, 0.125)}  # the pairs


# ----------------------------------------------------------------------------- helpers

# torch's default lets cuDNN convolutions and cuBLAS matmuls run FP32 as TF32 on Ampere and
# later (10-bit mantissa): an "FP32" reference must turn both off (issue 17, finding 5).
def tf32_settings() -> dict:
    return {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32}


@contextlib.contextmanager
def no_tf32():
    """True FP32 in the ``with`` body (both TF32 switches off), restored after."""
    before = tf32_settings()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before["cuda.matmul.allow_tf32"]
        torch.backends.cudnn.allow_tf32 = before["cudnn.allow_tf32"]


def gpu_facts() -> dict:
    """GPU name, driver, CUDA/torch/Triton/PyNvVideoCodec versions for the results file."""
    from nvpipe.platform.telemetry import nvml_driver_version

    facts = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
             "host": platform.node(), "driver": nvml_driver_version()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                     compute_capability=f"{props.major}.{props.minor}")
    for module in ("triton", "PyNvVideoCodec", "av"):
        try:
            facts[module.lower()] = __import__(module).__version__
        except Exception as error:  # noqa: BLE001 - PyNvVideoCodec raises RuntimeError
            facts[module.lower()] = f"unavailable ({type(error).__name__})"
    from nvpipe.platform.gpu import nvenc_status

    facts["nvenc"] = nvenc_status(0, "h264")[1]
    return facts


def generate_clip(path: str, width: int, height: int, frames: int = 120, fps: int = 30) -> str:
    """Write an H.264 (yuv420p, libx264 ultrafast) clip of a moving gradient; returns path."""
    import av

    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(frames):
            phase = i / frames
            rgb = np.stack(np.broadcast_arrays((x + phase) % 1, (y + 2 * phase) % 1,
                                               0.5 + 0.5 * np.sin(6.28 * (x + y + phase))),
                           axis=-1)
            frame = av.VideoFrame.from_ndarray((rgb * 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _timed(step, iterations: int, warmup: int = 3) -> float:
    """Seconds per call of ``step()`` on the current stream (CUDA events)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000 / iterations


def load_network(weights: Optional[str], dtype: torch.dtype, device: str = "cuda"):
    """The BN-folded network from ``weights``; random weights (same cost) when None."""
    import rvm

    if weights:
        return rvm.load(weights, device=device, dtype=dtype)
    from rvm.fuse import fuse

    network = fuse(rvm.MattingNetwork("mobilenetv3").eval())  # BN folded, as rvm.load does
    return network.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------- 1. network

def bench_network(width: int, height: int, ratio: float, weights: Optional[str] = None,
                  iterations: int = 100, chunks=(1, 2, 4)) -> dict:
    """Network throughput in frames/s on a ``width x height`` tensor (no I/O).

    - ``fp32_eager_fps``: the full model (``forward``, refiner at full size), FP32, eager:
      the baseline, what RVM's README measures.
    - ``fp16_graph_fps[T]``: ``coefficients`` under a CUDA graph (chunks of T frames) plus
      the fused full-size tail (``matting_tail`` to a uint8 composite), FP16 channels_last.
    - ``fp16_graph_network_only_fps[T]``: the graph alone.
    """
    from nvpipe import kernels
    from nvpipe.engine.convert import downsample
    from nvpipe.engine.matting.graphed import GraphedMatting

    src = torch.rand(1, 3, height, width, device="cuda")
    result = {"width": width, "height": height, "ratio": ratio, "iterations": iterations}

    fp32 = load_network(weights, torch.float32)
    state = [None] * 4

    @torch.inference_mode()
    def eager_step():
        nonlocal state
        _, _, *state = fp32(src, *state, downsample_ratio=ratio)

    with no_tf32():  # the baseline is true FP32
        result["fp32_settings"] = tf32_settings()
        result["fp32_eager_fps"] = round(1 / _timed(eager_step, max(10, iterations // 4)), 1)
    del fp32, state
    torch.cuda.empty_cache()

    fp16 = load_network(weights, torch.float16)
    result["fp16_graph_fps"], result["fp16_graph_network_only_fps"] = {}, {}
    for t in chunks:
        frames = torch.rand(t, 3, height, width, device="cuda", dtype=torch.float16)
        small = downsample(frames, ratio)
        graph = GraphedMatting(fp16, tuple(small.shape), "cuda", torch.float16,
                               downsample_ratio=ratio)
        out = torch.empty(t, 3, height, width, device="cuda", dtype=torch.uint8)

        def graph_only():
            graph(small)

        @torch.inference_mode()
        def graph_and_tail():
            coeff_a, coeff_b = graph(small)
            kernels.matting_tail(coeff_a, coeff_b, frames, output="composite",
                                 background=(0.0, 1.0, 0.0), out=out)

        n = max(5, iterations // t)
        result["fp16_graph_network_only_fps"][t] = round(t / _timed(graph_only, n), 1)
        result["fp16_graph_fps"][t] = round(t / _timed(graph_and_tail, n), 1)
        del graph
    best_t = max(result["fp16_graph_fps"], key=result["fp16_graph_fps"].get)
    result["best_chunk"] = best_t
    result["speedup_vs_fp32"] = round(result["fp16_graph_fps"][best_t] / result["fp32_eager_fps"], 2)
    return result


# ----------------------------------------------------------------------------- 2. decode

def bench_decode(path: str, ratio: float, max_frames: Optional[int] = None,
                 convert: bool = True) -> dict:
    """NVDEC decode (+ kernel 1 into owned ``src``/``src_sm`` buffers when ``convert``).

    Returns ``{"frames", "seconds", "fps", "codec", "size"}``; the clock runs from the first
    ``Decode`` call to the last conversion's completion (source opening excluded).
    """
    from nvpipe.engine.convert import Converter
    from nvpipe.sources.nvdec import NvdecSource

    source = NvdecSource(path)
    info = source.info
    stream = torch.cuda.Stream()
    frames = 0
    with source, torch.cuda.stream(stream), torch.inference_mode():
        converter = Converter(info, ratio=ratio, device="cuda", dtype=torch.float16)
        started = time.perf_counter()
        for frame in source:
            if convert:
                converter(frame)
            frame.release()
            frames += 1
            if max_frames and frames >= max_frames:
                break
        stream.synchronize()
        seconds = time.perf_counter() - started
    return {"frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 1),
            "codec": info.codec, "size": f"{info.width}x{info.height}", "converted": convert}


def _decode_worker(path, ratio, max_frames, barrier, results):
    try:
        torch.cuda.init()
        from nvpipe.sources.nvdec import NvdecSource

        NvdecSource(path).close()  # CUDA context, library load: outside the clock
        barrier.wait()
        results.put(bench_decode(path, ratio, max_frames))
    except Exception as error:  # noqa: BLE001 - reported by the parent
        try:
            barrier.abort()
        except Exception:  # noqa: BLE001
            pass
        results.put({"error": f"{type(error).__name__}: {error}"})


def bench_decode_jobs(path: str, ratio: float, jobs: int, max_frames: Optional[int] = None) -> dict:
    """``jobs`` processes decoding (and converting) ``path`` at once, released together.

    Several NVDEC sessions spread over the GPU's engines (7 on H100). Returns aggregate
    fps (all frames / wall time from the common start to the last finish) and per-job fps.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(jobs + 1)
    results = context.Queue()
    workers = [context.Process(target=_decode_worker, args=(path, ratio, max_frames, barrier,
                                                            results)) for _ in range(jobs)]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:
        pass  # a worker failed before the start; its error arrives through `results`
    started = time.perf_counter()
    outcomes = [results.get(timeout=900) for _ in workers]
    wall = time.perf_counter() - started
    for worker in workers:
        worker.join()
    errors = [o["error"] for o in outcomes if "error" in o]
    if errors:
        return {"jobs": jobs, "error": errors[0]}
    frames = sum(o["frames"] for o in outcomes)
    return {"jobs": jobs, "frames": frames, "seconds": round(wall, 3),
            "aggregate_fps": round(frames / wall, 1), "per_job_fps": [o["fps"] for o in outcomes]}


# ----------------------------------------------------------------------------- 3. memory

def memory_peak(path: str, ratio: float, weights: Optional[str] = None,
                max_frames: int = 60) -> dict:
    """Peak GPU memory of decode -> convert -> FP16 graph -> fused tail on ``path`` (4K).

    ``torch_peak_mib`` is torch's allocator (tensors, graph pools); ``nvml_used_mib`` is the
    device's whole usage as NVML sees it (includes the CUDA context and NVDEC's surfaces),
    minus what was in use before this function started.
    """
    from nvpipe import kernels
    from nvpipe.engine.convert import Converter
    from nvpipe.engine.matting.graphed import GraphedMatting
    from nvpipe.sources.nvdec import NvdecSource
    from nvpipe.platform.telemetry import Telemetry

    # Earlier stages leave torch's allocator cache full; emptied, NVML sees this stage's growth.
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    telemetry = Telemetry(interval=0.05).start()
    torch.cuda.reset_peak_memory_stats()
    network = load_network(weights, torch.float16)
    graph = None
    frames = 0
    with NvdecSource(path) as source, torch.inference_mode():
        info = source.info
        converter = Converter(info, ratio=ratio, device="cuda", dtype=torch.float16)
        out = torch.empty(info.height + (info.height + 1) // 2, 2 * ((info.width + 1) // 2),
                          device="cuda", dtype=torch.uint8)
        for frame in source:
            src, src_sm = converter(frame)
            frame.release()
            if graph is None:
                graph = GraphedMatting(network, (1, *src_sm.shape), "cuda", torch.float16,
                                       downsample_ratio=ratio)
            coeff_a, coeff_b = graph(src_sm[None])
            if hasattr(kernels, "matting_tail_nv12"):
                kernels.matting_tail_nv12(coeff_a[0], coeff_b[0], src, output="composite",
                                          background=(0.0, 1.0, 0.0), out=out)
            else:
                kernels.matting_tail(coeff_a[0], coeff_b[0], src, output="composite",
                                     background=(0.0, 1.0, 0.0), out_dtype=torch.uint8)
            frames += 1
            if frames >= max_frames:
                break
    torch.cuda.synchronize()
    summary = telemetry.stop()
    result = {"frames": frames, "size": f"{info.width}x{info.height}",
              "torch_peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
              "torch_reserved_peak_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1)}
    if summary.get("available"):
        result["nvml_used_mib"] = round(summary["memory_used_mib_max"]
                                        - summary["memory_used_mib_start"], 1)
        result["nvml_note"] = "device-wide: includes other processes' changes"
    else:
        result["nvml_used_mib"] = None
        result["nvml_note"] = summary["reason"]
    return result


# ----------------------------------------------------------------------------- 4. end to end

def bench_end_to_end(path: str, ratio: float, weights: Optional[str] = None, repeats: int = 2,
                     chunk: int = 1, null: bool = False) -> dict:
    """``nvpipe.run`` on CUDA, file to file: NVDEC, kernel 1, FP16 graphs, the fused tail,
    a composite over green into H.264 by the sinks ``open_sink`` picks (the CPU's libx264
    where the GPU has no NVENC, as on H100/H200); with ``null``, into the null sink
    (``os.devnull``: the composite is made, in NV12 on the GPU, and dropped).

    The network is loaded once, outside the clock; one untimed run first (Triton JIT,
    cuDNN). ``fps`` is the steady state: frames after the first over the time from the
    first frame out to the end (every frame's GPU and encode work inside it; opening the
    decoder, capturing the graph and starting threads outside); ``wall_fps`` counts the
    whole call. Random weights (no ``weights``) give a meaningless matte whose encoding cost
    may differ from a real one. Returns ``{"fps" (median), "runs", "wall_fps", "frames",
    "encoders", "telemetry"}`` (NVML summary of the last run).
    """
    from nvpipe.job import Job, OutputSpec
    from nvpipe.engine.runner import run

    network = load_network(weights, torch.float16)
    runs, wall_runs, result = [], [], None
    with tempfile.TemporaryDirectory() as folder:
        for attempt in range(repeats + 1):
            first_out: list[float] = []

            def progress(done, total, elapsed, first_out=first_out):
                if not first_out:
                    first_out.append(time.perf_counter())
            output = os.devnull if null else os.path.join(folder, f"out{attempt}.mp4")
            job = Job(input=path, outputs=[OutputSpec(output)],
                      device="cuda", ratio=ratio, chunk=chunk, overwrite=True)
            started = time.perf_counter()
            result = run(job, network=network, verbose=True, progress=progress)
            ended = time.perf_counter()
            if attempt and result.frames > 1:  # the first run warms up
                runs.append(round((result.frames - 1) / (ended - first_out[0]), 1))
                wall_runs.append(round(result.frames / (ended - started), 1))
    return {"fps": round(statistics.median(runs), 1), "runs": runs,
            "wall_fps": round(statistics.median(wall_runs), 1), "frames": result.frames,
            "chunk": chunk, "encoders": result.encoders, "telemetry": result.telemetry}


TARGET_NULL_FRACTION = 0.90  # 4K null-sink end to end vs the slower of network and decode
TARGET_FP16_SPEEDUP = 3.0    # FP16 graphs vs FP32 eager
TARGET_MEMORY_MIB = 2048     # GPU memory at 4K


def targets(run: dict) -> dict:
    """Issue 4's targets for one clip's measurements: each ``{"value", "target", "met"}``."""
    network, chunk = run["network"], run["end_to_end_null"]["chunk"]
    graph_fps = network["fp16_graph_fps"][chunk]
    bound = min(graph_fps, run["decode"]["fps"])
    result = {
        "null_sink_vs_bound": {"value": round(run["end_to_end_null"]["fps"] / bound, 3),
                               "target": TARGET_NULL_FRACTION,
                               "bound": f"min(FP16 graphs T={chunk} {graph_fps}, decode {run['decode']['fps']}) fps"},
        "fp16_graphs_vs_fp32_eager": {"value": round(graph_fps / network["fp32_eager_fps"], 2),
                                      "target": TARGET_FP16_SPEEDUP},
    }
    if "memory" in run and run["memory"].get("nvml_used_mib") is not None:
        result["memory_mib"] = {"value": run["memory"]["nvml_used_mib"], "target": TARGET_MEMORY_MIB}
    for name, row in result.items():
        row["met"] = row["value"] <= row["target"] if name == "memory_mib" else row["value"] >= row["target"]
    return result


# ----------------------------------------------------------------------------- main

def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip_arg", nargs="?", metavar="CLIP",
                        help="same as --clip (bench/throughput.py's positional clip)")
    parser.add_argument("--clip", help="a video to decode (default: generated 1080p and 4K clips)")
    parser.add_argument("--device", choices=("cuda",), default="cuda",
                        help="accepted from bench/throughput.py --device cuda")
    parser.add_argument("--repeats", type=int, default=2, help="timed end-to-end runs per clip")
    parser.add_argument("--network-frames", type=int,
                        help="accepted from bench/throughput.py; unused (see --iterations)")
    parser.add_argument("--ratio", type=float, help="downsample ratio for --clip (default auto)")
    parser.add_argument("--weights", help="RVM weights (.pth/.onnx); random weights otherwise")
    parser.add_argument("--frames", type=int, default=120, help="frames of generated clips")
    parser.add_argument("--iterations", type=int, default=100, help="network iterations")
    parser.add_argument("--jobs", default="1,2,4", help="concurrent decodes to try, e.g. 1,2,4,7")
    parser.add_argument("--out", default=str(RESULTS), help="folder for the JSON results")
    args = parser.parse_args(argv)
    if args.clip_arg and args.clip and args.clip_arg != args.clip:
        parser.error("give the clip once (positional or --clip)")
    args.clip = args.clip or args.clip_arg
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU is available here (torch.cuda.is_available() is False); "
              "nothing measured", file=sys.stderr)
        return 2
    from nvpipe.errors import DeviceError
    from nvpipe.platform.gpu import check_cuda_ready
    from nvpipe.job import auto_ratio

    try:
        check_cuda_ready()
    except DeviceError as error:
        print(f"gpu_bench: {error}", file=sys.stderr)
        return 2
    jobs = [int(j) for j in args.jobs.split(",") if j]
    report = {"facts": gpu_facts(), "command": " ".join([sys.executable, "-m", "bench.gpu_bench",
                                                         *(argv if argv is not None else sys.argv[1:])]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs": {}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = str(report["facts"].get("gpu", "gpu")).replace(" ", "_")
    target = out / f"gpu_bench_{gpu}_{datetime.now().strftime('%Y%m%d_%H%M%S')}.json"

    def save() -> None:  # after every stage: a step killed by a timeout keeps what it measured
        target.write_text(json.dumps(report, indent=2, default=str))

    rows = [("GPU", f"{report['facts'].get('gpu')} (driver {report['facts']['driver']})")]
    with tempfile.TemporaryDirectory() as folder:
        if args.clip:
            import av

            with av.open(args.clip) as container:
                stream = container.streams.video[0]
                size = (stream.width, stream.height)
            clips = {"clip": (args.clip, *size, args.ratio or auto_ratio(*size))}
        else:
            clips = {name: (generate_clip(os.path.join(folder, f"{name}.mp4"), w, h, args.frames),
                            w, h, r) for name, (w, h, r) in SIZES.items()}
        for name, (path, width, height, ratio) in clips.items():
            run = report["runs"][name] = {"clip": path if args.clip else f"generated {width}x{height}"}
            stages = [
                ("network", lambda: bench_network(width, height, ratio, args.weights, args.iterations)),
                ("decode", lambda: bench_decode(path, ratio)),
                ("decode_only_nvdec", lambda: bench_decode(path, ratio, convert=False)),
                ("decode_jobs", lambda: [bench_decode_jobs(path, ratio, j) for j in jobs]),
                ("memory", lambda: memory_peak(path, ratio, args.weights) if height >= 2160 else None),
                ("end_to_end_null", lambda: bench_end_to_end(path, ratio, args.weights, args.repeats, null=True)),
                ("end_to_end", lambda: bench_end_to_end(path, ratio, args.weights, args.repeats)),
                ("targets", lambda: targets(run)),
            ]
            for key, measure in stages:
                started = time.perf_counter()
                try:
                    value = measure()
                except Exception as error:  # noqa: BLE001 - recorded; the other stages go on
                    value = {"error": f"{type(error).__name__}: {error}"}
                if value is not None:
                    run[key] = value
                print(f"gpu_bench: {name} {key} ({time.perf_counter() - started:.0f} s): "
                      f"{json.dumps(value, default=str)[:400]}", flush=True)
                save()
            rows += summary_rows(name, run)
    print(_table(rows))
    print(f"results: {target}")
    return 0


def summary_rows(name: str, run: dict) -> list[tuple[str, str]]:
    """The table's rows for one clip; a stage that failed shows its error."""
    def row(label: str, key: str, make) -> tuple[str, str]:
        try:
            return (f"{name} {label}", make())
        except Exception:  # noqa: BLE001 - the stage failed or is absent
            stage = run.get(key)
            error = stage.get("error", "") if isinstance(stage, dict) else ""
            return (f"{name} {label}", f"not measured {error}".strip())

    net = run.get("network", {})
    rows = [
        row("network FP32 eager", "network", lambda: f"{net['fp32_eager_fps']} fps"),
        row("network FP16 graphs", "network", lambda: ", ".join(f"T={t}: {v} fps" for t, v in net["fp16_graph_fps"].items())
            + f" ({net['speedup_vs_fp32']}x FP32)"),
        row("decode NVDEC+convert", "decode", lambda: f"{run['decode']['fps']} fps"),
        row("decode NVDEC only", "decode_only_nvdec", lambda: f"{run['decode_only_nvdec']['fps']} fps"),
        row("decode --jobs", "decode_jobs", lambda: ", ".join(f"{r['jobs']}: {r.get('aggregate_fps', r.get('error'))}"
                                                for r in run["decode_jobs"])),
        row("nvpipe run to a null sink", "end_to_end_null", lambda: f"{run['end_to_end_null']['fps']} fps steady "
                                                 f"({run['end_to_end_null']['wall_fps']} wall)"),
        row("nvpipe run end to end", "end_to_end", lambda: f"{run['end_to_end']['fps']} fps steady "
                                             f"({run['end_to_end']['wall_fps']} wall, "
                                             f"{', '.join(sorted(set(run['end_to_end']['encoders'].values())))})"),
    ]
    if "memory" in run:
        rows.append(row("memory peak", "memory", lambda: f"torch {run['memory']['torch_peak_mib']} MiB, "
                                               f"NVML {run['memory']['nvml_used_mib']} MiB"))
    targets_met = run.get("targets", {})
    if "error" in targets_met:
        return rows + [(f"{name} targets", f"not measured {targets_met['error']}")]
    for target_name, result in targets_met.items():
        rows.append(row(f"target {target_name}", "targets", lambda result=result:
                        f"{result['value']} (target {result['target']}): {'met' if result['met'] else 'NOT met'}"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
