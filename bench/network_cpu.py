"""CPU speed of the RVM network, side by side with ONNX Runtime, on real frames.

    python bench/network_cpu.py [--clip ../shared/footage/four_people_1080p.mp4] [--ratio 0.25]
        [--frames 6] [--rounds 5] [--no-compile] [--threads N] [--json bench/results/network_cpu.json]

Every configuration processes the same decoded frames with its recurrent state carried;
configurations run interleaved, one frame each in turn, so load from other processes on
the shared cores spreads over all of them. Reported: median ms/frame per configuration
(after one warm-up frame), and the ratio to ONNX Runtime. Then the low-resolution part
(``coefficients``) against the full-resolution tail (``refine``) of the folded network.

Configurations (whole network, full-size fgr + pha out):
- ``onnxruntime``: the official export, default session options.
- ``eager_unfused``: BatchNorm kept (the ``.pth``).
- ``eager_folded``: BatchNorm folded into the convs.
- ``eager_folded_cl``: folded, weights and input channels_last.
- ``compiled_coefficients``: folded, ``torch.compile`` of ``coefficients`` (the low-res
  part) + the eager ``refine`` tail.
- ``optimize_for_cpu``: what ``rvm.optimize_for_cpu`` returns (folded, channels_last).
- ``optimize_for_cpu_compiled``: the same with ``compile=True``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NVPIPE_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

import rvm  # noqa: E402


def decode_frames(path: Path, count: int) -> list[torch.Tensor]:
    import av

    with av.open(str(path)) as container:
        return [
            torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float().div(255)
            for f in islice(container.decode(video=0), count)
        ]


class OrtRunner:
    def __init__(self, weights: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
        self.reset()

    def reset(self):
        self.states = [np.zeros((1, 1, 1, 1), np.float32)] * 4

    def __call__(self, src: torch.Tensor, ratio: float):
        feeds = {"src": src.numpy(), "downsample_ratio": np.array([ratio], np.float32)}
        feeds.update({f"r{i + 1}i": s for i, s in enumerate(self.states)})
        fgr, pha, *self.states = self.session.run(None, feeds)
        return fgr, pha


class TorchRunner:
    """``forward`` of a network; ``channels_last`` converts the input too."""

    def __init__(self, network, channels_last=False):
        self.network, self.channels_last = network, channels_last
        self.reset()

    def reset(self):
        self.states = [None] * 4

    def __call__(self, src, ratio):
        if self.channels_last:
            src = src.contiguous(memory_format=torch.channels_last)
        fgr, pha, *self.states = self.network(src, *self.states, downsample_ratio=ratio)
        return fgr, pha


class SplitRunner:
    """``coefficients`` (any callable with its signature) on the downsampled frame, then
    ``refine`` at full size; states start as zeros so a compiled graph sees one signature."""

    def __init__(self, coefficients, variant="mobilenetv3"):
        self.coefficients, self.variant = coefficients, variant
        self.reset()

    def reset(self):
        self.states = None

    def __call__(self, src, ratio):
        src_sm = rvm.downsample(src, ratio)
        if self.states is None:
            h, w = src_sm.shape[-2:]
            sizes = [(h, w)]
            for _ in range(4):
                sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
            channels = rvm.STATE_CHANNELS[self.variant]
            self.states = [src.new_zeros(1, c, *hw) for c, hw in zip(channels, sizes[1:])]
        coeff_a, coeff_b, *self.states = self.coefficients(src_sm, *self.states)
        return rvm.refine(coeff_a, coeff_b, src)


def measure(runners: dict, frames, ratio, rounds) -> dict:
    """ms/frame samples per runner: each round runs every runner over all the frames in
    turn (blocks, not frame-by-frame interleaving: ORT's and OpenMP's spinning worker
    threads would otherwise steal the cores from the next configuration's first ops)."""
    times = {name: [] for name in runners}
    with torch.inference_mode():
        for name, runner in runners.items():  # warm-up (and compile) on the first frame
            start = time.perf_counter()
            runner(frames[0], ratio)
            print(f"  warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)
        for _ in range(rounds):
            for name, runner in runners.items():
                runner.reset()
                for src in frames:
                    start = time.perf_counter()
                    runner(src, ratio)
                    times[name].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, default=SHARED / "footage/four_people_1080p.mp4")
    parser.add_argument("--onnx", type=Path, default=SHARED / "weights/rvm_mobilenetv3_fp32.onnx")
    parser.add_argument("--pth", type=Path, default=SHARED / "weights/rvm_mobilenetv3_bnidentity.pth")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile configuration")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    frames = decode_frames(args.clip, args.frames)
    print(f"{len(frames)} frames {tuple(frames[0].shape)} ratio {args.ratio}, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs", flush=True)

    unfused = rvm.load_network(args.pth, folded=False)
    folded = rvm.load_network(args.onnx)
    folded_cl = rvm.load_network(args.onnx).to(memory_format=torch.channels_last)
    runners = {
        "onnxruntime": OrtRunner(args.onnx),
        "eager_unfused": TorchRunner(unfused),
        "eager_folded": TorchRunner(folded),
        "eager_folded_cl": TorchRunner(folded_cl, channels_last=True),
    }
    if not args.no_compile:
        compiled_net = rvm.load_network(args.onnx)
        runners["compiled_coefficients"] = SplitRunner(torch.compile(compiled_net.coefficients))
    optimized = rvm.optimize_for_cpu(rvm.load_network(args.onnx))
    runners["optimize_for_cpu"] = TorchRunner(optimized)
    if not args.no_compile:
        runners["optimize_for_cpu_compiled"] = SplitRunner(
            rvm.optimize_for_cpu(rvm.load_network(args.onnx), compile=True).coefficients
        )
    samples = measure(runners, frames, args.ratio, args.rounds)
    medians = {name: statistics.median(t) for name, t in samples.items()}
    minima = {name: min(t) for name, t in samples.items()}
    reference = medians["onnxruntime"]
    print(f"\nwhole network, ms/frame ({args.rounds} rounds x {len(frames)} frames; the minimum is"
          " the least disturbed by other load):")
    for name, ms in medians.items():
        print(f"  {name:26s} median {ms:7.1f}  min {minima[name]:7.1f}   "
              f"{reference / ms:5.2f}x onnxruntime (median), {minima['onnxruntime'] / minima[name]:5.2f}x (min)")

    # Low-resolution part against the full-resolution tail, folded eager network.
    src = frames[0]
    src_sm = rvm.downsample(src, args.ratio)
    parts = {"downsample": [], "coefficients": [], "coefficients_cpu_optimized": [], "refine": []}
    with torch.inference_mode():
        coeff_a, coeff_b, *_ = folded.coefficients(src_sm)
        for _ in range(args.rounds * 3):
            start = time.perf_counter()
            optimized.coefficients(src_sm)
            parts["coefficients_cpu_optimized"].append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            rvm.downsample(src, args.ratio)
            parts["downsample"].append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            folded.coefficients(src_sm)
            parts["coefficients"].append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            rvm.refine(coeff_a, coeff_b, src)
            parts["refine"].append((time.perf_counter() - start) * 1e3)
    split = {name: statistics.median(t) for name, t in parts.items()}
    split_min = {name: min(t) for name, t in parts.items()}
    print(f"\nparts of the folded eager network at {tuple(src.shape[-2:])}, ratio {args.ratio}:")
    for name, ms in split.items():
        print(f"  {name:26s} median {ms:7.1f}  min {split_min[name]:7.1f} ms")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared), torch {torch.__version__}",
            "frame": list(frames[0].shape), "ratio": args.ratio,
            "frames": len(frames), "rounds": args.rounds,
            "median_ms_per_frame": medians,
            "min_ms_per_frame": minima,
            "speedup_vs_onnxruntime_median": {k: reference / v for k, v in medians.items()},
            "speedup_vs_onnxruntime_min": {k: minima["onnxruntime"] / v for k, v in minima.items()},
            "parts_median_ms": split,
            "parts_min_ms": split_min,
        }, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
