"""Where OpenVINO's time goes inside the low-resolution network: its per-layer profile.

    python bench/openvino_layers.py [--size 480x270] [--calls 20] [--out bench/results/openvino-layers-480x270.json]

The network nvpipe runs on the CPU (its own export of ``coefficients``, the convolutions of
concatenations split, ``nvpipe.engine.matting.ort.coefficients_model``), compiled with
nvpipe's settings (``openvino.compile_config``: float32, one stream, the thread budget's
threads) plus ``PERF_COUNT``, run on a random input with the recurrent state carried. Per
layer and per kind of layer (OpenVINO's node type and the kernel it chose): milliseconds a
call, the median of ``--calls`` calls after 5 warm-up calls. Measure alone.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WEIGHTS = REPO.parent / "shared" / "weights" / "rvm_mobilenetv3_fp32.onnx"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x270", help="the network's input, WxH")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--weights", default=str(WEIGHTS))
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    from nvpipe.platform.threads import budget, tune_for_pipeline

    tune_for_pipeline()
    import numpy as np
    import openvino

    from nvpipe.engine.matting._common import recurrent_state_shapes
    from nvpipe.engine.matting.openvino import INPUTS, _reshaped, compile_config
    from nvpipe.engine.matting.ort import coefficients_model
    from nvpipe.model import converted

    threads = budget().network
    path = coefficients_model(converted.load(args.weights))
    core = openvino.Core()
    compiled = core.compile_model(_reshaped(core, path, height, width, "mobilenetv3"), "CPU",
                                  {**compile_config(threads), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    shapes = [(1, 3, height, width)] + recurrent_state_shapes(height, width)
    rng = np.random.default_rng(0)
    feeds = {name: np.zeros(shape, np.float32) for name, shape in zip(INPUTS, shapes)}
    feeds["src_sm"] = rng.random(shapes[0], dtype=np.float32)
    by_kind: dict[tuple, list[float]] = collections.defaultdict(list)
    by_layer: dict[tuple, list[float]] = collections.defaultdict(list)
    totals = []
    for call in range(5 + args.calls):
        outputs = request.infer(feeds).to_tuple()  # coeff_a, coeff_b, r1o..r4o
        for name, value in zip(INPUTS[1:], outputs[2:]):
            feeds[name] = np.array(value)  # the state carried, as in a run
        if call < 5:
            continue
        kinds: dict[tuple, float] = collections.Counter()
        total = 0.0
        for layer in request.profiling_info:
            ms = layer.real_time.total_seconds() * 1000
            kinds[(layer.node_type, layer.exec_type)] += ms
            by_layer[(layer.node_name, layer.node_type, layer.exec_type)].append(ms)
            total += ms
        for kind, ms in kinds.items():
            by_kind[kind].append(ms)
        totals.append(total)
    median = {key: statistics.median(values) for key, values in by_kind.items()}
    layers = {key: statistics.median(values) for key, values in by_layer.items()}
    report = {
        "command": "python bench/openvino_layers.py " + " ".join(argv if argv is not None
                                                               else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "openvino": openvino.__version__, "threads": threads, "size": [width, height],
        "load_1min": os.getloadavg()[0],
        "layers_ms_per_call_median": round(statistics.median(totals), 2),
        "by_kind": [{"node_type": k[0], "kernel": k[1], "ms": round(v, 3)}
                    for k, v in sorted(median.items(), key=lambda item: -item[1]) if v > 0],
        "slowest_layers": [{"layer": k[0], "node_type": k[1], "kernel": k[2], "ms": round(v, 3)}
                           for k, v in sorted(layers.items(), key=lambda item: -item[1])[:15]],
    }
    print(f"{report['layers_ms_per_call_median']} ms a call in layers ({width}x{height}, "
          f"{threads} threads)")
    for row in report["by_kind"][:12]:
        print(f"  {row['ms']:7.2f} ms  {row['node_type']} ({row['kernel']})")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
