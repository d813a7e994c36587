#!/usr/bin/env python3
"""The CPU network modes' alpha against FP32, per frame, over every shared clip (issue 19).

    python bench/cpu_fidelity.py --json bench/results/cpu-fidelity.json
    python bench/cpu_fidelity.py --clips four_people_1080p.mp4 --max-frames 10   # quick

Like ``bench/fp16_fidelity.py`` (whose per-frame figures, summary and criterion it uses:
alpha MAD < 1e-3 on every frame, no growth over the clip): each clip is decoded and
converted by the pipeline's CPU path; the reference is the float32 network
(``rvm.load``, NCHW); every mode keeps its own recurrent state; the alpha compared is the
full-resolution one from the tail (``matting_tail_reference``, float32).

Modes (each what ``nvpipe run --device cpu`` runs with that setting):
- ``torch``: ``--engine torch`` (float32, channels_last: summation order only);
- ``onnxruntime``: ``--engine onnxruntime`` (nvpipe's ONNX export in ONNX Runtime, float32);
- ``openvino``: ``--engine openvino`` (the same export in OpenVINO's CPU plugin, float32);
- ``bfloat16``: ``--dtype bfloat16`` (torch, oneDNN's BF16 kernels on AVX512-BF16/AMX);
- ``bf16-gru32``: an experiment, not offered: BF16 except the four ConvGRUs (recurrent
  state kept in float32) and the refiner's coefficient step (``rvm.precision``'s float32
  modules, as its fp16-gru32-refiner32 mode), channels_last;
- ``int8``: ONNX Runtime's dynamic int8 quantization of the same export
  (``onnxruntime.quantization.quantize_dynamic``, weights QInt8), not offered by nvpipe;
  measured here to say why.
Each mode's ms per frame (its network calls only, this process) is recorded beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import rvm  # noqa: E402
from fp16_fidelity import (CRITERION, SHARED, alpha_of, clip_paths, differences, machine,  # noqa: E402
                           sig, summarise)

MODES = ("torch", "onnxruntime", "openvino", "bfloat16", "int8", "bf16-gru32")
DEFAULT_WEIGHTS = SHARED / "weights" / "rvm_mobilenetv3_fp32.onnx"


class MixedBf16:
    """BF16 with the ConvGRUs and the refiner in float32 (state float32 between frames)."""

    def __init__(self, network: rvm.MattingNetwork):
        from rvm.blocks import ConvGRU
        from rvm.precision import Float32ConvGRU, Float32Refiner, _swap_class

        rvm.optimize_for_cpu(network)
        kept = [m for m in network.modules() if isinstance(m, ConvGRU)] + [network.refiner]
        inside = {id(m) for k in kept for m in k.modules()}
        for module in network.modules():
            if id(module) not in inside:
                module._apply(lambda t: t.to(torch.bfloat16) if t.is_floating_point() else t,
                              recurse=False)
        for module in kept:
            module.float()
            _swap_class(module, Float32Refiner if module is network.refiner else Float32ConvGRU)
        self.network, self.state = network, [None] * 4

    def __call__(self, small):
        a, b, *self.state = self.network.coefficients(small[None].to(torch.bfloat16), *self.state)
        return a[0].float(), b[0].float()


def make_modes(reference: rvm.MattingNetwork, ratio: float, modes: list[str], scratch: Path) -> dict:
    from nvpipe.engine.matting.engines import CpuMatting
    from nvpipe.engine.matting.ort import OrtMatting, coefficients_model

    made = {}
    for mode in modes:
        network = copy.deepcopy(reference)
        if mode in ("torch", "onnxruntime", "openvino"):
            made[mode] = CpuMatting(network, downsample_ratio=ratio, engine=mode)
        elif mode == "bfloat16":
            made[mode] = CpuMatting(network, downsample_ratio=ratio, engine="torch",
                                    dtype=torch.bfloat16)
        elif mode == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            source = coefficients_model(network, ratio != 1)
            target = scratch / f"{source.stem}-int8.onnx"
            if not target.exists():
                quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
            made[mode] = OrtMatting(network, ratio, model=target)
        elif mode == "bf16-gru32":
            made[mode] = MixedBf16(network)
        else:
            raise SystemExit(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    return made


def measure_clip(path: Path, reference, modes: list[str], max_frames: int, scratch: Path) -> dict:
    from nvpipe.engine.convert import Converter
    from nvpipe.job import auto_ratio
    from nvpipe.sources import open_source

    started = time.perf_counter()
    with open_source(str(path), device="cpu") as source:
        info = source.info
        width, height = info.display_size
        ratio = auto_ratio(width, height)
        converter = Converter(info, ratio=ratio, device="cpu", dtype=torch.float32)
        implementations = make_modes(reference, ratio, modes, scratch)
        state = [None] * 4
        per_frame = {mode: [] for mode in modes}
        spent = {mode: 0.0 for mode in modes}
        count = 0
        for frame in source:
            if count >= max_frames:
                break
            src, small = converter(frame)
            with torch.inference_mode():
                a, b, *state = reference.coefficients(small[None], *state, use_refiner=ratio != 1)
                alpha_ref = alpha_of(a, b, src)
                for mode, implementation in implementations.items():
                    begun = time.perf_counter()
                    coeff_a, coeff_b = implementation(small)
                    spent[mode] += time.perf_counter() - begun
                    alpha = alpha_of(coeff_a[None], coeff_b[None], src)
                    per_frame[mode].append(differences(alpha, alpha_ref))
            count += 1
    small_h, small_w = small.shape[-2:]
    return {
        "clip": str(path.relative_to(SHARED / "footage")), "size": [width, height],
        "network_input": [small_w, small_h], "ratio": ratio, "frames_measured": count,
        "frames_in_clip": info.frame_count, "seconds": round(time.perf_counter() - started, 1),
        "ms_per_frame": {mode: round(1000 * spent[mode] / max(count, 1), 1) for mode in modes},
        "summary": {mode: summarise(rows) for mode, rows in per_frame.items()},
        "per_frame": {mode: {key: [sig(r[key]) for r in rows] for key in ("mad", "max", "over_0.01")}
                      for mode, rows in per_frame.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", help="names under shared/footage (default: all)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"some of {','.join(MODES)}")
    parser.add_argument("--max-frames", type=int, default=10**9)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    reference = rvm.load(args.weights)
    command = "python " + " ".join([os.path.relpath(__file__, REPO),
                                    *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command, "machine": machine(), "criterion": CRITERION,
              "load_before": [round(x, 2) for x in os.getloadavg()], "modes": modes,
              "clips": []}
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        for path in clip_paths(args.clips):
            row = measure_clip(path, reference, modes, args.max_frames, Path(scratch))
            report["clips"].append(row)
            line = ", ".join(f"{m} worst MAD {row['summary'][m]['max_mad']:.2g} "
                             f"({'meets' if row['summary'][m]['meets_target'] else 'FAILS'}, "
                             f"{row['ms_per_frame'][m]} ms)" for m in modes)
            print(f"{row['clip']} ({row['frames_measured']} frames, {row['network_input']}): "
                  f"{line}", flush=True)
            if args.json:
                report["load_after"] = [round(x, 2) for x in os.getloadavg()]
                Path(args.json).write_text(json.dumps(report, indent=1))
    worst = {m: max(c["summary"][m]["max_mad"] for c in report["clips"]) for m in modes}
    meets = {m: all(c["summary"][m]["meets_target"] for c in report["clips"]) for m in modes}
    report["worst_mad"], report["meets_target"] = worst, meets
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print("worst MAD over every clip: " + ", ".join(
        f"{m} {worst[m]:.2g} ({'meets' if meets[m] else 'fails'})" for m in modes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
