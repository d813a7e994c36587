"""The steps of the one device call (bench/gpu_session.sh), each writing ``$OUT/<step>.json``.

    python bench/gpu_checks.py STEP [--out DIR] [--shared DIR] [--clips DIR]

Steps, most decisive first (gpu_session.sh runs them in this order, each under a timeout):
  context   the CUDA context check: nvpipe's probes (NVML, names, PyNvVideoCodec under
            ``keep_cuda_context``) with ``cuCtxGetCurrent`` before and after, torch after
  nvdec     NVDEC's DLPack layout for NV12 and P016; frame counts and timestamps vs PyAV
  clips     the shared 1080p clip looped and scaled to 1080p and 4K (libx264, real content)
  network   at 4K/0.125 and 1080p/0.25 on real frames: FP32 eager (full model), FP16 eager
            TorchScript-frozen (RVM's published method), FP16 CUDA graphs at T=1,2,4
  decode    NVDEC alone and with the converter, 1 and 7 sessions, both sizes
  end_to_end  nvpipe.run to the null sink and CPU-encoded, with NVML NVDEC/GPU utilisation
            and busy CPU cores, both sizes; GPU memory at 4K
  x264      the CPU encoder's ceilings per preset at 1080p and 4K, with the thread count
  fidelity  FP16 (graphs) vs FP32 alpha per frame on the real 1080p clip
  subject   --subject's cost per frame on CUDA (SubjectSelector whole and in parts: pack,
            copy to the host, tracker, upload) and cupyx.scipy.ndimage.label + copy vs
            scipy.ndimage.label, on the network's alpha of the 1080p clip at 512x288

A step writes its JSON as it goes (a timeout keeps what was measured) and prints one line
per result. Without a GPU a GPU step writes ``{"error": "<one-line reason>"}`` and exits 2.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from nvpipe.platform.threads import tune_for_pipeline  # noqa: E402

tune_for_pipeline()

import torch  # noqa: E402
from gpu_bench import no_tf32, tf32_settings  # noqa: E402 - the FP32 reference's settings

SIZES = {"4k": (3840, 2160, 0.125), "1080p": (1920, 1080, 0.25)}  # the pairs
CLIP_FRAMES = int(os.environ.get("CLIP_FRAMES", "240"))  # 8 s at 30 fps: long enough for steady state


class Results:
    """One step's JSON file, rewritten after every ``put``."""

    def __init__(self, out: Path, step: str):
        self.path = out / f"{step}.json"
        self.data: dict = {"step": step, "started": time.strftime("%H:%M:%S")}
        self.save()

    # Keys too long for the summary: the JSON file keeps them, the log shows their size.
    QUIET = ("per frame", "started")

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.save()
        # "KEY " lines are what gpu_session.sh's summary.txt shows (the last one per key).
        text = f"{len(value)} values" if key in self.QUIET and hasattr(value, "__len__") \
            else json.dumps(value, default=str)
        print(f"KEY {self.path.stem} {key}: {text[:300]}", flush=True)

    def measure(self, key: str, body: Callable[[], object]) -> object:
        """``put(key, body())``, or the error's first line; never raises."""
        started = time.perf_counter()
        try:
            value = body()
        except Exception as error:  # noqa: BLE001 - recorded; the step goes on
            value = {"error": one_line(error)}
        if isinstance(value, dict):
            value.setdefault("seconds", round(time.perf_counter() - started, 1))
        self.put(key, value)
        return value

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=2, default=str))


def one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"


def gpu_problem() -> Optional[str]:
    """Why the GPU steps cannot run here, in one line, or None."""
    if torch.version.cuda is None:
        return f"no CUDA GPU: torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is False)"
    return None


def libcuda_current() -> int:
    from nvpipe.platform.gpu import cuda_driver

    driver = cuda_driver()
    return driver.current() if driver is not None else -1


def busy_cores(body: Callable[[], object]) -> tuple[object, float, float]:
    """``(body(), wall seconds, CPU cores busy on average)`` for this process's threads."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    value = body()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return value, wall, round(cpu / wall, 2) if wall > 0 else 0.0


def clip_path(clips: Path, size: str) -> Path:
    return clips / f"four_people_{size}.mp4"


def real_frames(path: Path, count: int, device: str = "cuda") -> list[torch.Tensor]:
    """``count`` frames of ``path`` as float32 ``[3, H, W]`` in [0, 1] on ``device``."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            frames.append(rgb.to(device).float().div_(255))
            if len(frames) == count:
                break
    return frames


# ----------------------------------------------------------------------------- steps

def step_context(results: Results, args) -> None:
    """The stray context: what nvpipe's probes do to this thread's current context."""
    from nvpipe.platform import gpu

    x = torch.arange(1 << 20, device="cuda", dtype=torch.float32)
    torch.cuda.synchronize()
    before = libcuda_current()
    results.put("ctx before", hex(before))
    results.measure("nvml encoder", lambda: {"h264": gpu.nvenc_from_nvml(0, "h264"),
                                             "hevc": gpu.nvenc_from_nvml(0, "hevc")})
    results.measure("nvenc_status h264", lambda: {"status": gpu.nvenc_status(0, "h264"),
                                                  "ctx after": hex(libcuda_current())})
    # The raw probes, each under the guard (what ctxleak.py shows unguarded).
    nvc = gpu.import_pynvvideocodec()
    for name, call in (("GetEncoderCaps", lambda: nvc.GetEncoderCaps(gpuid=0, codec="h264")),
                       ("CreateEncoder", lambda: nvc.CreateEncoder(256, 256, "NV12", 1,
                                                                   codec="h264", gpu_id=0)),
                       ("decoder_caps", lambda: gpu.decoder_caps("h264", 8))):
        def guarded(call=call, name=name):
            outcome = "ok"
            try:
                with gpu.keep_cuda_context(name):
                    call()
            except Exception as error:  # noqa: BLE001
                outcome = one_line(error)
            return {"outcome": outcome, "ctx after": hex(libcuda_current()),
                    "unchanged": libcuda_current() == before}
        results.measure(name, guarded)
    results.put("stray contexts repaired", dict(gpu.stray_contexts))

    def torch_after():
        y = (x * 2).sum().item()
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            z = (x + 1).sum()
        torch.cuda.synchronize()
        return {"ok": True, "values": [y, float(z)]}

    results.measure("torch after", torch_after)
    results.measure("describe", lambda: gpu.describe())
    results.put("ctx unchanged at end", libcuda_current() == before)


def step_nvdec(results: Results, args) -> None:
    """NVDEC's frame layout and timing against PyAV's, on 8- and 10-bit clips."""
    from nvpipe.sources.nvdec import NvdecSource
    from nvpipe.sources.pyav import PyAVSource

    shared = Path(args.shared)
    clips = {"nv12 h264 1080p": shared / "footage/four_people_1080p.mp4",
             "p016 hevc 10-bit": shared / "footage/color/h265_10bits.mp4",
             "p016 h264 10-bit": shared / "footage/color/h264_10bits.mp4",
             "nv12 av1": shared / "footage/color/av1_video.mkv",
             "nv12 rotated": shared / "footage/color/nasa_13013_rotated.mp4"}
    for name, path in clips.items():
        def compare(path=path):
            raw = {}
            with NvdecSource(str(path)) as gpu_source, PyAVSource(str(path)) as cpu_source:
                gpu_pts, cpu_pts, first = [], [], None
                for frame in gpu_source:
                    if first is None:
                        first = {"pix_fmt": frame.pix_fmt, "shape": list(frame.data.shape),
                                 "dtype": str(frame.data.dtype),
                                 "strides": list(frame.data.stride())}
                    gpu_pts.append(frame.pts)
                    frame.release()
                cpu_pts = [frame.pts for frame in cpu_source]
                raw = {"frames nvdec": len(gpu_pts), "frames pyav": len(cpu_pts),
                       "pts equal": gpu_pts == cpu_pts, "first frame": first,
                       "size": f"{gpu_source.info.width}x{gpu_source.info.height}"}
                if gpu_pts != cpu_pts:
                    mismatch = next((i for i, (a, b) in enumerate(zip(gpu_pts, cpu_pts)) if a != b),
                                    min(len(gpu_pts), len(cpu_pts)))
                    raw["first mismatch"] = {"index": mismatch, "nvdec": gpu_pts[mismatch:mismatch + 3],
                                             "pyav": cpu_pts[mismatch:mismatch + 3]}
            return raw

        results.measure(name, compare)


def step_clips(results: Results, args) -> None:
    """The real 1080p clip, looped to CLIP_FRAMES and scaled to each size (libx264)."""
    import throughput

    clips = Path(args.clips)
    clips.mkdir(parents=True, exist_ok=True)
    source = str(Path(args.shared) / "footage/four_people_1080p.mp4")
    for size in ("1080p", "4k"):  # the cheaper first: a timeout still leaves one
        width, height, _ = SIZES[size]

        def make(size=size, width=width, height=height):
            path = clip_path(clips, size)
            partial = path.with_suffix(".partial.mp4")  # renamed when complete
            started = time.perf_counter()
            throughput.make_clip(source, str(partial), width, height, CLIP_FRAMES)
            partial.rename(path)
            return {"path": str(path), "frames": CLIP_FRAMES, "mib": round(path.stat().st_size / 2**20, 1),
                    "seconds": round(time.perf_counter() - started, 1)}
        results.measure(size, make)


def timed_on_stage(stream, step: Callable[[], object], iterations: int, warmup: int = 3, *,
                   make_event: Optional[Callable[[], object]] = None,
                   use_stream: Optional[Callable[[object], object]] = None,
                   synchronize: Optional[Callable[[], None]] = None) -> float:
    """Seconds per call of ``step()``, timed by CUDA events recorded on ``stream``: the
    stream the work runs on (``step`` is called with it current).

    A stage's own stream is non-blocking: events on the legacy default stream would not
    wait for its work, and would time the CPU's enqueueing instead (issue 17, finding 3).
    ``make_event``/``use_stream``/``synchronize`` stand in for torch.cuda's in tests.
    """
    make_event = make_event or (lambda: torch.cuda.Event(enable_timing=True))
    use_stream = use_stream or torch.cuda.stream
    synchronize = synchronize or torch.cuda.synchronize
    with use_stream(stream):
        for _ in range(warmup):
            step()
        synchronize()
        start, end = make_event(), make_event()
        start.record(stream)
        for _ in range(iterations):
            step()
        end.record(stream)
    end.synchronize()
    return start.elapsed_time(end) / 1000 / iterations


def _timed(step: Callable[[], object], iterations: int, warmup: int = 3) -> float:
    """``timed_on_stage`` on the calling thread's current stream (work that runs there)."""
    return timed_on_stage(torch.cuda.current_stream(), step, iterations, warmup)




def step_network(results: Results, args) -> None:
    """Network fps on real frames: FP32 eager, FP16 TorchScript-frozen eager, FP16 graphs."""
    import rvm
    from nvpipe import kernels
    from nvpipe.engine.convert import downsample
    from nvpipe.engine.matting import MattingStage, recurrent_state_shapes

    weights = args.weights
    for size, (width, height, ratio) in SIZES.items():
        path = clip_path(Path(args.clips), size)
        if not path.exists():
            results.put(size, {"error": f"no clip {path} (the clips step did not finish)"})
            continue
        frames = real_frames(path, 8)
        row: dict = {"width": width, "height": height, "ratio": ratio}
        iterations = 60

        def fp32_eager():
            network = rvm.load(weights, device="cuda", dtype=torch.float32)
            state, index = [None] * 4, [0]

            @torch.inference_mode()
            def step():
                nonlocal state
                src = frames[index[0] % len(frames)][None]
                index[0] += 1
                _, _, *state = network(src, *state, downsample_ratio=ratio)

            with no_tf32():  # true FP32, the speed-up's baseline
                row["fp32_settings"] = tf32_settings()
                return round(1 / _timed(step, iterations // 2), 1)

        row["fp32_eager_fps"] = _safe(fp32_eager)
        results.put(size, row)

        def fp16_frozen():
            """RVM's table: torch.jit.freeze of the FP16 model, eager (no graphs)."""
            network = rvm.load(weights, device="cuda", dtype=torch.float16)
            src = frames[0][None].half()
            h, w = downsample(src, ratio).shape[-2:]
            states = [torch.zeros(s, device="cuda", dtype=torch.float16)
                      for s in recurrent_state_shapes(h, w)]

            class Forward(torch.nn.Module):
                def __init__(self, inner):
                    super().__init__()
                    self.inner = inner

                def forward(self, src, r1, r2, r3, r4):
                    return self.inner(src, r1, r2, r3, r4, downsample_ratio=ratio)

            with torch.no_grad():  # tracing records no inference tensors
                frozen = torch.jit.freeze(torch.jit.trace(Forward(network).eval(), (src, *states),
                                                          check_trace=False))
            half = [f[None].half() for f in frames]
            index = [0]

            @torch.no_grad()
            def step():
                nonlocal states
                _, _, *states = frozen(half[index[0] % len(half)], *states)
                index[0] += 1

            return round(1 / _timed(step, iterations), 1)

        row["fp16_torchscript_frozen_fps"] = _safe(fp16_frozen)
        results.put(size, row)

        graphs, network_only = {}, {}
        network16 = rvm.load(weights, device="cuda", dtype=torch.float16)
        for chunk in (1, 2, 4):
            def graphed(chunk=chunk):
                stage = MattingStage(network16, ratio=ratio, device="cuda", dtype=torch.float16)
                srcs = torch.stack([frames[i % len(frames)] for i in range(chunk)]).half()
                small = downsample(srcs, ratio)
                stage.prepare(tuple(small.shape))
                out = torch.empty(chunk, 3, height, width, device="cuda", dtype=torch.uint8)

                @torch.inference_mode()
                def with_tail():
                    coeff_a, coeff_b = stage(small)
                    kernels.matting_tail(coeff_a, coeff_b, srcs, output="composite",
                                         background=(0.0, 1.0, 0.0), out=out)

                @torch.inference_mode()
                def alone():
                    stage(small)

                # The events go on the stage's stream, where the graph replays run.
                n = max(10, iterations // chunk)
                return (round(chunk / timed_on_stage(stage.stream, with_tail, n), 1),
                        round(chunk / timed_on_stage(stage.stream, alone, n), 1),
                        "graph" if type(stage._graphs[tuple(small.shape)]).__name__ == "GraphedMatting"
                        else "eager fallback")

            value = _safe(graphed)
            if isinstance(value, tuple):
                graphs[chunk], network_only[chunk] = value[0], value[1]
                row["fp16_mode"] = value[2]
            else:
                graphs[chunk] = value
            row["fp16_graph_with_tail_fps"], row["fp16_graph_network_only_fps"] = graphs, network_only
            results.put(size, row)
        results.put(f"{size} fps", "fp32 eager (no TF32) {}; fp16 frozen {}; fp16 graphs+tail {}; "
                    "graphs alone {}; {}".format(
                        row.get("fp32_eager_fps"), row.get("fp16_torchscript_frozen_fps"),
                        "/".join(str(graphs.get(t)) for t in (1, 2, 4)),
                        "/".join(str(network_only.get(t)) for t in (1, 2, 4)),
                        row.get("fp16_mode", "?")))
        del network16
        torch.cuda.empty_cache()


def _safe(body: Callable[[], object]):
    try:
        return body()
    except Exception as error:  # noqa: BLE001
        return {"error": one_line(error)}


def step_decode(results: Results, args) -> None:
    from gpu_bench import bench_decode, bench_decode_jobs

    for size, (_, _, ratio) in SIZES.items():
        path = str(clip_path(Path(args.clips), size))
        results.measure(f"{size} nvdec only", lambda: bench_decode(path, ratio, convert=False))
        results.measure(f"{size} nvdec + convert", lambda: bench_decode(path, ratio))
        results.measure(f"{size} 7 sessions + convert", lambda: bench_decode_jobs(path, ratio, 7))


def step_end_to_end(results: Results, args) -> None:
    from gpu_bench import bench_end_to_end, memory_peak

    for size, (_, _, ratio) in SIZES.items():
        path = str(clip_path(Path(args.clips), size))
        for label, null in (("null sink", True), ("cpu-encoded", False)):
            def run(null=null):
                value, wall, cores = busy_cores(
                    lambda: bench_end_to_end(path, ratio, args.weights, repeats=1, null=null))
                value["busy_cpu_cores"] = cores
                value["cpu_count"] = os.cpu_count()
                return value
            results.measure(f"{size} {label}", run)
        if size == "4k":
            results.measure("4k memory", lambda: memory_peak(path, ratio, args.weights))


def step_x264(results: Results, args) -> None:
    """libx264's fps per preset on real content, threads as nvpipe sets them and automatic."""
    import av
    from nvpipe.sinks.pyav import DEFAULT_QUALITY, encoder_threads

    _, crf = DEFAULT_QUALITY["h264"]
    results.put("cpu", {"cores": os.cpu_count(), "nvpipe threads (GPU path)": encoder_threads(False) or "auto (0)"})
    frames_per = int(os.environ.get("X264_FRAMES", "60"))  # 4 presets x 2 sizes
    for size, (width, height, _) in SIZES.items():
        path = clip_path(Path(args.clips), size)
        if not path.exists():
            results.put(size, {"error": f"no clip {path}"})
            continue
        with av.open(str(path)) as container:
            frames = []
            for frame in container.decode(video=0):
                frames.append(frame.reformat(format="yuv420p"))
                if len(frames) == frames_per:
                    break
        row = {}
        for preset in ("ultrafast", "superfast", "veryfast", "faster"):
            def encode(preset=preset):
                import io

                buffer = io.BytesIO()
                with av.open(buffer, "w", format="mp4") as out:
                    stream = out.add_stream("libx264", rate=30,
                                            options={"preset": preset, "crf": str(crf)})
                    stream.codec_context.thread_count = 0  # FFmpeg's automatic count
                    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                    started = time.perf_counter()
                    for index, frame in enumerate(frames):
                        frame.pts = index
                        out.mux(stream.encode(frame))
                    out.mux(stream.encode())
                    seconds = time.perf_counter() - started
                return round(len(frames) / seconds, 1)
            (fps, wall, cores) = busy_cores(lambda: _safe(encode))
            row[preset] = {"fps": fps, "busy_cores": cores, "threads": "auto"}
            results.put(size, row)
        results.put(f"{size} fps", "; ".join(f"{preset} {value['fps']} ({value['busy_cores']} cores)"
                                             for preset, value in row.items()))


def step_fidelity(results: Results, args) -> None:
    """FP16 (the GPU default, under graphs) vs FP32 alpha on every frame of the 1080p clip."""
    import rvm
    from nvpipe import kernels
    from nvpipe.engine.convert import downsample
    from nvpipe.engine.matting import MattingStage

    path = Path(args.shared) / "footage/four_people_1080p.mp4"
    ratio = 0.25
    frames = real_frames(path, int(os.environ.get("FIDELITY_FRAMES", "300")))
    with no_tf32():  # warm-up and capture with the reference's settings
        stages = {dtype: MattingStage(rvm.load(args.weights, device="cuda", dtype=dtype),
                                      ratio=ratio, device="cuda", dtype=dtype)
                  for dtype in (torch.float32, torch.float16)}
    mad, worst = [], []
    with torch.inference_mode(), no_tf32():  # FP32 is the reference: no TF32 in it
        results.put("fp32 reference", tf32_settings())
        for index, src in enumerate(frames):
            alphas = {}
            for dtype, stage in stages.items():
                typed = src.to(dtype)
                coeff_a, coeff_b = stage(downsample(typed, ratio)[None])
                alphas[dtype] = kernels.matting_tail(coeff_a[0], coeff_b[0], typed, output="alpha",
                                                     out_dtype=torch.float32)
            difference = (alphas[torch.float16] - alphas[torch.float32]).abs()
            mad.append(round(difference.mean().item(), 6))
            worst.append(round(difference.max().item(), 4))
            if index % 50 == 49:
                results.put("per frame", {"alpha_mad": mad, "alpha_max": worst})
    third = max(1, len(mad) // 3)
    results.put("per frame", {"alpha_mad": mad, "alpha_max": worst})
    results.put("summary", {"frames": len(mad), "mad_max": max(mad), "mad_median": statistics.median(mad),
                            "mad_first_third": statistics.mean(mad[:third]),
                            "mad_last_third": statistics.mean(mad[-third:]),
                            "target": "MAD < 1e-3 on every frame, no growth",
                            "met": max(mad) < 1e-3})


SUBJECT_FRAMES = int(os.environ.get("SUBJECT_FRAMES", "40"))  # the first SUBJECT_WARMUP untimed
SUBJECT_WARMUP = 8  # CuPy compiles its labelling kernels on the first call; the tracker's
                    # first frame (choosing the subject) is not a steady frame either
SUBJECT_PARTS = ("selector", "pack", "copy", "tracker", "upload", "device label", "host label")


def device_labeller():
    """``(label, None)``: ``label(fg)`` (a CUDA torch tensor, nonzero = foreground) ->
    ``(labels, count)``, ``cupyx.scipy.ndimage.label`` with the tracker's structure (8-connected)
    on the device and its int32 labels copied to the host; ``(None, why)`` where CuPy is
    unusable."""
    try:
        import cupy
        from cupyx.scipy import ndimage as cupy_ndimage
    except Exception as error:  # noqa: BLE001 - ImportError, or CUDA libraries missing
        return None, one_line(error)
    from nvpipe.engine.subject import EIGHT

    def label(fg):
        # EIGHT stays a NumPy array: CuPy reads the structure on the host (a CuPy one would
        # be copied back on every call). The count comes back to the host inside label().
        labels, count = cupy_ndimage.label(cupy.from_dlpack(fg.to(torch.uint8)), structure=EIGHT)
        return cupy.asnumpy(labels), int(count)

    return label, None


def subject_costs(frames, spec, input_size: tuple[int, int], *, warmup: int = SUBJECT_WARMUP,
                  synchronize: Callable[[], None] = torch.cuda.synchronize,
                  device_label: Optional[Callable] = None,
                  progress: Optional[Callable[[dict], None]] = None) -> dict:
    """ms per frame of ``SubjectSelector`` on ``frames`` (``(coeff_a, coeff_b, src_sm)`` as the
    runner hands them over) and of its parts, medians over the frames after ``warmup``.

    Two selectors see every frame: one called whole (``selector``), one taken through
    ``SubjectSelector.__call__``'s body step by step: ``pack`` (the low-resolution alpha and
    colours as bytes, on the device), ``copy`` (``.cpu()``, its synchronisation), ``tracker``
    (``SubjectTracker.step`` on the host), ``upload`` (the keep mask to the device and the
    multiplies). Their coefficients must come out equal (``parts_match_whole``): the parts are
    then what the whole call does. Labelling the tracker's foreground (``pha > FOREGROUND``
    on the same bytes, 8-connected): ``host label`` (``scipy.ndimage.label``), ``device label``
    (``device_label``: CuPy on the device, the labels copied back), with whether the component
    counts and sizes agree. Every interval is closed by ``synchronize()``."""
    import numpy as np
    from scipy import ndimage

    from nvpipe.engine.subject import EIGHT, FOREGROUND, SubjectSelector

    whole, parts = SubjectSelector(spec, input_size), SubjectSelector(spec, input_size)
    times: dict[str, list[float]] = {name: [] for name in SUBJECT_PARTS}
    checks = {"frames": 0, "parts_match_whole": 0, "counts_agree": 0, "sizes_agree": 0,
              "foreground_agrees": 0, "components": []}

    def clock() -> float:
        synchronize()
        return time.perf_counter()

    for index, (coeff_a, coeff_b, src_sm) in enumerate(frames):
        row: dict[str, float] = {}
        a1, b1 = coeff_a.clone(), coeff_b.clone()
        started = clock()
        whole(a1, b1, src_sm)
        row["selector"] = clock() - started

        a2, b2 = coeff_a.clone(), coeff_b.clone()
        started = clock()
        pha = parts.low_resolution_alpha(a2, b2, src_sm)
        packed_device = torch.cat([pha[None], src_sm.float().clamp(0, 1)]).mul_(255).round_() \
            .to(torch.uint8)
        row["pack"] = clock() - started
        started = time.perf_counter()
        packed = packed_device.cpu().numpy()  # .cpu() waits for the copy
        row["copy"] = clock() - started
        started = time.perf_counter()
        keep = parts._step(packed, False)
        row["tracker"] = time.perf_counter() - started
        started = clock()
        parts._apply(keep, a2, b2)
        row["upload"] = clock() - started

        # The tracker's threshold (step(): pha > FOREGROUND) on the same bytes, on each side.
        started = time.perf_counter()
        host_fg = packed[0].astype(np.float32) / 255.0 > FOREGROUND
        host_labels, host_count = ndimage.label(host_fg, structure=EIGHT)
        row["host label"] = time.perf_counter() - started
        if device_label is not None:
            started = clock()
            device_labels, device_count = device_label(packed_device[0].float().div_(255) > FOREGROUND)
            row["device label"] = clock() - started
            checks["counts_agree"] += device_count == host_count
            checks["sizes_agree"] += bool(np.array_equal(
                np.sort(np.bincount(device_labels.ravel(), minlength=device_count + 1)[1:]),
                np.sort(np.bincount(host_labels.ravel(), minlength=host_count + 1)[1:])))
            checks["foreground_agrees"] += bool(np.array_equal(device_labels > 0, host_fg))
        checks["frames"] += 1
        checks["parts_match_whole"] += bool(torch.equal(a1, a2) and torch.equal(b1, b2))
        checks["components"].append(int(host_count))
        if index >= warmup:
            for name, seconds in row.items():
                times[name].append(seconds * 1000)
        if progress is not None and (index + 1) % 10 == 0:
            progress(_subject_summary(times, checks, whole))
    return _subject_summary(times, checks, whole)


def _subject_summary(times: dict, checks: dict, selector) -> dict:
    summary: dict = {"timed_frames": len(times["selector"])}
    for name, values in times.items():
        if values:
            summary[f"{name} ms"] = round(statistics.median(values), 3)
            summary[f"{name} ms p90"] = round(sorted(values)[int(0.9 * (len(values) - 1))], 3)
    components = checks["components"]
    summary.update({key: value for key, value in checks.items() if key != "components"})
    summary["components median"] = statistics.median(components) if components else None
    summary["decided"] = selector.describe()
    summary["lost frames"] = selector.tracker.lost_frames
    return summary


def subject_line(summary: dict) -> str:
    """The step's one KEY line: the whole call, its parts, the two labellings."""
    def ms(name):
        value = summary.get(f"{name} ms")
        return "?" if value is None else f"{value:.2f}"

    line = (f"selector {ms('selector')} ms/frame (pack {ms('pack')}, copy {ms('copy')}, "
            f"tracker {ms('tracker')}, upload {ms('upload')}); parts match whole "
            f"{summary['parts_match_whole']}/{summary['frames']}; ")
    if "device label ms" in summary:
        line += (f"cupy label+copy {ms('device label')} vs scipy label {ms('host label')} ms; "
                 f"counts agree {summary['counts_agree']}/{summary['frames']}")
    else:
        line += f"scipy label {ms('host label')} ms (cupy not measured)"
    return line + f"; {summary['timed_frames']} frames timed"


def step_subject(results: Results, args, device: str = "cuda", dtype=torch.float16,
                 count: int = SUBJECT_FRAMES) -> None:
    """--subject on CUDA (issue 20): the selector per frame and its parts, CuPy's labelling
    against SciPy's, on the network's (FP16, graphs) real coefficients of the 1080p clip at
    its automatic ratio (network input 512x288), the plaid shirt kept (bench/subject.py).
    ``device``/``dtype``/``count``: a test runs the same on the CPU (float32, a few frames)."""
    import rvm
    from nvpipe.engine.convert import downsample
    from nvpipe.engine.matting import MattingStage
    from nvpipe.job import auto_ratio, subject_spec
    from subject import FOUR_SUBJECT  # bench/subject.py's subject on this clip

    label, why = device_labeller() if device == "cuda" else (None, f"not on {device}")
    results.put("cupy", "cupyx.scipy.ndimage.label" if label is not None
                else f"skipped: CuPy does not import here ({why})" if device == "cuda"
                else f"skipped ({why})")
    path = Path(args.shared) / "footage/four_people_1080p.mp4"
    frames = real_frames(path, count, device)
    height, width = frames[0].shape[-2:]
    ratio = auto_ratio(width, height)
    stage = MattingStage(rvm.load(args.weights, device=device, dtype=dtype), ratio=ratio,
                         device=device, dtype=dtype, engine="torch")  # engine: the CPU's only
    results.put("input", {"clip": path.name, "size": [width, height], "ratio": ratio,
                          "network input": list(downsample(frames[0], ratio).shape[-2:])[::-1],
                          "frames": len(frames), "warm-up": SUBJECT_WARMUP, "device": device,
                          "dtype": str(dtype), "subject": list(FOUR_SUBJECT),
                          "engine": stage.engine})

    def coefficients():
        for src in frames:
            typed = src.to(dtype)
            small = downsample(typed, ratio)
            coeff_a, coeff_b = stage(small[None], [typed])
            yield coeff_a[0], coeff_b[0], small

    with torch.inference_mode():
        summary = subject_costs(coefficients(), subject_spec(FOUR_SUBJECT), (width, height),
                                synchronize=torch.cuda.synchronize if device == "cuda"
                                else lambda: None, device_label=label,
                                progress=lambda partial: results.put("summary", partial))
    results.put("summary", summary)
    results.put("subject", subject_line(summary))

STEPS = {"context": step_context, "nvdec": step_nvdec, "clips": step_clips,
         "network": step_network, "decode": step_decode, "end_to_end": step_end_to_end,
         "x264": step_x264, "fidelity": step_fidelity, "subject": step_subject}
CPU_STEPS = ("clips", "x264")  # the rest need the GPU


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=tuple(STEPS))
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/nvpipe-gpu-out"))
    parser.add_argument("--shared", default=os.environ.get("NVPIPE_SHARED", str(REPO.parent / "shared")))
    parser.add_argument("--clips", default=os.environ.get("CLIPS", "/tmp/nvpipe-clips"))
    parser.add_argument("--weights", default=os.environ.get("NVPIPE_WEIGHTS"))
    args = parser.parse_args(argv)
    if args.weights is None:
        args.weights = str(Path(args.shared) / "weights/rvm_mobilenetv3_bnidentity.pth")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out, args.step)
    problem = None if args.step in CPU_STEPS else gpu_problem()
    if problem is not None:
        results.put("error", problem)
        print(f"gpu_checks {args.step}: {problem}", file=sys.stderr)
        return 2
    try:
        STEPS[args.step](results, args)
    except Exception as error:  # noqa: BLE001 - one line in the results, status 1
        results.put("error", one_line(error))
        print(f"gpu_checks {args.step}: {one_line(error)}", file=sys.stderr)
        return 1
    results.put("finished", time.strftime("%H:%M:%S"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
