"""What keeping the subject costs per frame, and how well it tracks (issue 20).

    python bench/subject.py [--out bench/results/subject.json] [--frames N] [--skip-four]

Cases, each run through the real network (RVM MobileNetV3, the CPU path, float32):

- ``four_people``: the shared 1080p clip, four people side by side and touching, the one
  in the middle (the plaid shirt, ``--subject 994,750``) kept. No truth: reported are the
  frames where the subject was lost, the share of plain RVM's alpha mass kept, and how
  steady the subject's own mass is.
- ``walking_behind``, ``crossing``, ``occluded``, ``joined_then_apart``,
  ``leaves_and_returns``, ``scene_cut``: made from the
  shared ``person_fullbody_360x640.mp4``. Its person is cut out with plain RVM's alpha; a
  second copy, mirrored and with red and blue swapped where blue dominates (orange overalls,
  the same skin), is the bystander;
  both are composited at half size over a plain backdrop (640x360), moving, in a known depth
  order. So each pixel's person is known, and the issue's measure is computed per frame on
  the output alpha: the alpha mass on the other person's side as a share of the subject's
  (plain RVM's, on its side), and the share of the subject's plain mass kept. While the
  subject is more than half hidden, the first is taken of half its whole mass (as in
  ``tests/engine/test_subject.py``).

Cost: the selector's time per frame (``SubjectSelector.__call__``: the low-resolution alpha,
its copy to the host, the tracker, the mask applied), on this machine's CPU: the process's
CPU time (what it costs; the tracker is single-threaded) and the wall time (which on a
shared machine also counts waiting for a core). On CUDA the same host work runs after one
synchronisation per frame; no GPU was at hand to measure that, nor CuPy's labelling: the
GPU session's ``subject`` step (``bench/gpu_checks.py``) does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("NVPIPE_SHARED", REPO.parent / "shared"))
FOUR = SHARED / "footage" / "four_people_1080p.mp4"
PERSON = SHARED / "footage" / "person_fullbody_360x640.mp4"
WEIGHTS = SHARED / "weights" / "rvm_mobilenetv3_bnidentity.pth"
FOUR_SUBJECT = (994, 750)  # the plaid shirt, second from the right, in the first frame
CANVAS = (640, 360)  # (W, H) of the made cases
BACKDROP = (150, 160, 170)


def load_network(weights=WEIGHTS):
    import rvm

    return rvm.load(str(weights) if Path(weights).exists() else None, device="cpu")


def decode(path: Path, frames: int | None = None) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if frames is not None and len(out) >= frames:
                break
    return out


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)


def plain_alphas(network, frames: list[np.ndarray]) -> list[np.ndarray]:
    """Plain RVM's full-size alpha of each frame (float32 (H, W))."""
    from nvpipe import kernels
    from nvpipe.engine.convert import downsample
    from nvpipe.engine.matting import MattingStage
    from nvpipe.job import auto_ratio

    height, width = frames[0].shape[:2]
    ratio = auto_ratio(width, height)
    stage = MattingStage(network, ratio=ratio, device="cpu", dtype=torch.float32)
    out = []
    with torch.inference_mode():
        for rgb in frames:
            src = _tensor(rgb)
            small = downsample(src, ratio)
            coeff_a, coeff_b = stage(small[None], [src])
            out.append(kernels.matting_tail(coeff_a[0], coeff_b[0], src, output="alpha",
                                            out_dtype=torch.float32, impl="reference")[0].numpy())
    return out


def run_case(network, frames: list[np.ndarray], subject, *, truth=None, whole=None) -> dict:
    """The network and the selector over ``frames``; per frame the plain and kept alpha
    masses, the time of the selector and, given ``truth`` (per frame: bool (H, W) masks
    ``(subject's side, others' side)``) and ``whole`` (the subject's unhidden alpha mass per
    frame), the issue's measure."""
    from nvpipe import kernels
    from nvpipe.engine.convert import downsample
    from nvpipe.engine.cuts import CutDetector
    from nvpipe.engine.matting import MattingStage
    from nvpipe.engine.subject import SubjectSelector
    from nvpipe.job import auto_ratio, subject_spec

    height, width = frames[0].shape[:2]
    ratio = auto_ratio(width, height)
    stage = MattingStage(network, ratio=ratio, device="cpu", dtype=torch.float32)
    selector = SubjectSelector(subject_spec(subject), (width, height))
    cuts = CutDetector()
    rows = []
    with torch.inference_mode():
        for index, rgb in enumerate(frames):
            src = _tensor(rgb)
            small = downsample(src, ratio)
            cut = cuts(small)
            if cut:
                stage.reset()
            coeff_a, coeff_b = stage(small[None], [src])
            coeff_a, coeff_b = coeff_a[0], coeff_b[0]
            plain = kernels.matting_tail(coeff_a, coeff_b, src, output="alpha",
                                         out_dtype=torch.float32, impl="reference")[0].numpy()
            started, cpu = time.perf_counter(), time.process_time()
            selector(coeff_a, coeff_b, small, cut=cut)
            spent, cpu = time.perf_counter() - started, time.process_time() - cpu
            kept = kernels.matting_tail(coeff_a, coeff_b, src, output="alpha",
                                        out_dtype=torch.float32, impl="reference")[0].numpy()
            report = selector.tracker.reports[-1]
            row = {"frame": index, "ms": round(spent * 1000, 2),
                   "cpu_ms": round(cpu * 1000, 2), "cut": bool(cut),
                   "plain_mass": round(float(plain.sum()), 1),
                   "kept_mass": round(float(kept.sum()), 1), "lost": report.lost,
                   "people": report.people}
            if truth is not None:
                mine, theirs = truth[index]
                subject_plain = float((plain * mine).sum())
                visible = subject_plain
                base = max(visible, 0.5 * whole[index]) if whole is not None else visible
                row["others"] = round(float((kept * theirs).sum()) / base, 4) if base else None
                row["retained"] = (round(float((kept * mine).sum()) / subject_plain, 4)
                                   if subject_plain and visible >= 0.5 * (whole[index] or 0)
                                   else None)
                row["plain_others"] = (round(float((plain * theirs).sum()) / base, 4)
                                       if base else None)
            rows.append(row)
    return {"frames": rows, "decided": selector.describe(), "ratio": ratio,
            "low_resolution": list(selector.tracker.labels.shape[::-1])}


def summarise(case: dict) -> dict:
    rows = case["frames"]
    ms = np.array([r["ms"] for r in rows[1:]] or [rows[0]["ms"]])
    cpu = np.array([r["cpu_ms"] for r in rows[1:]] or [rows[0]["cpu_ms"]])
    out = {"frames": len(rows), "lost_frames": sum(r["lost"] for r in rows),
           "selector_cpu_ms_median": round(float(np.median(cpu)), 1),
           "selector_cpu_ms_p90": round(float(np.percentile(cpu, 90)), 1),
           "selector_wall_ms_median": round(float(np.median(ms)), 1),
           "selector_wall_ms_p90": round(float(np.percentile(ms, 90)), 1),
           "selector_ms_first_frame": rows[0]["ms"],
           "kept_share_of_plain_mass": round(sum(r["kept_mass"] for r in rows)
                                             / max(1e-9, sum(r["plain_mass"] for r in rows)), 3),
           "decided": case["decided"], "ratio": round(case["ratio"], 4),
           "low_resolution": case["low_resolution"]}
    if "others" in rows[0]:
        others = [r["others"] for r in rows if r["others"] is not None]
        retained = [r["retained"] for r in rows if r["retained"] is not None]
        out.update({
            "others_max": max(others), "others_median": round(float(np.median(others)), 4),
            "frames_others_over_2pct": sum(o > 0.02 for o in others),
            "retained_min": min(retained) if retained else None,
            "frames_retained_under_95pct": sum(r < 0.95 for r in retained),
            "plain_others_median": round(float(np.median(
                [r["plain_others"] for r in rows if r["plain_others"] is not None])), 3)})
    return out


# -- the made cases ---------------------------------------------------------------------------
def person_layers(network, frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The shared full-body clip's person scaled to the canvas's height: (rgb, alpha) per
    frame, the alpha plain RVM's on the original clip."""
    clip = decode(PERSON, frames)
    alphas = plain_alphas(network, clip)
    scale = CANVAS[1] / clip[0].shape[0]  # the person's height: the canvas's
    size = (round(clip[0].shape[1] * scale), CANVAS[1])  # 202 x 360
    rgb = [np.asarray(_resize(c, size)) for c in clip]
    alpha = [np.asarray(_resize((a * 255).astype(np.uint8), size)).astype(np.float32) / 255
             for a in alphas]
    return rgb, alpha


def _resize(array: np.ndarray, size: tuple[int, int]):
    from PIL import Image

    return Image.fromarray(array).resize(size, Image.BILINEAR)


def _place(canvas, layer_rgb, layer_alpha, left: int):
    """Composites a layer over ``canvas`` at column ``left`` (partly outside is fine);
    returns its alpha over the whole canvas."""
    height, width = canvas.shape[:2]
    lw = layer_rgb.shape[1]
    x0, x1 = max(0, left), min(width, left + lw)
    full = np.zeros((height, width), np.float32)
    if x1 <= x0:
        return full
    alpha = layer_alpha[:, x0 - left:x1 - left, None]
    colour = layer_rgb[:, x0 - left:x1 - left].astype(np.float32)
    canvas[:, x0:x1] = canvas[:, x0:x1] * (1 - alpha) + colour * alpha
    full[:, x0:x1] = alpha[..., 0]
    return full


def made_case(kind: str, layers, frames: int):
    """``(frames rgb, truth sides, subject's whole mass, subject point)`` for a made case:
    the subject is the original person, the bystander the orange copy."""
    from scipy import ndimage

    rgb, alpha = layers
    # The bystander: mirrored, and where blue dominates (the overalls) red and blue swapped,
    # so the clothes are orange and the skin stays skin.
    bystander_rgb = [np.ascontiguousarray(np.where((r[..., 2:3] > r[..., 0:1]), r[..., ::-1], r)
                                          [:, ::-1]) for r in rgb]
    bystander_alpha = [np.ascontiguousarray(a[:, ::-1]) for a in alpha]
    width, height = CANVAS
    lw = rgb[0].shape[1]
    t = np.linspace(0, 1, frames)
    centre = (width - lw) // 2
    if kind == "walking_behind":
        subject_x, bystander_x, subject_front = np.full(frames, centre), -lw + t * (width + lw), True
    elif kind == "crossing":
        subject_x, bystander_x, subject_front = 20 + t * 400, 420 - t * 400, True
    elif kind == "occluded":
        subject_x, bystander_x, subject_front = np.full(frames, centre), -lw + t * (width + lw), False
    elif kind == "joined_then_apart":
        subject_x = np.full(frames, 170.0)
        bystander_x = np.where(t < 0.5, 262.0, 262 + (t - 0.5) * 2 * 190)
        subject_front = True
    elif kind == "leaves_and_returns":  # out of the right edge, a while away, back in
        subject_x = np.interp(t, [0, 0.35, 0.65, 1], [300, width + 10, width + 10, 300])
        bystander_x = np.full(frames, 40.0)
        subject_front = True
    elif kind == "scene_cut":  # a cut to another place: the two have swapped sides
        subject_x = np.where(t < 0.5, 60.0, 400.0)
        bystander_x = np.where(t < 0.5, 400.0, 60.0)
        subject_front = True
    else:
        raise ValueError(kind)
    ys, xs = np.mgrid[0:height, 0:width]
    backdrop = np.empty((height, width, 3), np.float32)
    backdrop[:] = BACKDROP
    backdrop += (ys[..., None] / height * 30 - 15)
    elsewhere = np.empty_like(backdrop)
    elsewhere[:] = (70, 52, 40)  # the other shot's backdrop: dark brown
    elsewhere += (xs[..., None] / width * 40 - 20)
    out, truth, whole = [], [], []
    for i in range(frames):
        canvas = (elsewhere if kind == "scene_cut" and t[i] >= 0.5 else backdrop).copy()
        j = i % len(rgb)
        order = [("bystander", bystander_x[i]), ("subject", subject_x[i])]
        if not subject_front:
            order.reverse()
        full = {}
        for who, x in order:
            layer = (rgb[j], alpha[j]) if who == "subject" else (bystander_rgb[j], bystander_alpha[j])
            full[who] = _place(canvas, layer[0], layer[1], int(round(x)))
        out.append(np.clip(canvas, 0, 255).astype(np.uint8))
        # Who each pixel shows: the front layer where it is opaque enough, else the back one.
        front, back = order[1][0], order[0][0]
        owner = np.full((height, width), -1, np.int8)
        owner[full[back] > 0.5] = 0 if back == "subject" else 1
        owner[full[front] > 0.5] = 0 if front == "subject" else 1
        if (owner >= 0).any():
            iy, ix = ndimage.distance_transform_edt(owner < 0, return_distances=False,
                                                    return_indices=True)
            nearest = owner[iy, ix]
        else:
            nearest = np.full((height, width), 1, np.int8)
        truth.append((nearest == 0, nearest == 1))
        whole.append(float(full["subject"].sum()))
    first_x = int(round(subject_x[0])) + lw // 2
    point = (first_x, height * 0.55)
    return out, truth, whole, point


MADE_CASES = ("walking_behind", "crossing", "occluded", "joined_then_apart",
              "leaves_and_returns", "scene_cut")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "subject.json"))
    parser.add_argument("--frames", type=int, default=50, help="frames per made case")
    parser.add_argument("--skip-four", action="store_true", help="leave out four_people")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the CPU time per frame is then one core's
    network = load_network()
    results = {"command": "python bench/subject.py " + " ".join(argv or sys.argv[1:]),
               "machine": {"cpu": platform.processor() or platform.machine(),
                           "cores": os.cpu_count(), "torch": torch.__version__},
               "cases": {}}
    if not args.skip_four:
        frames = decode(FOUR)
        case = run_case(network, frames, FOUR_SUBJECT)
        masses = [r["kept_mass"] for r in case["frames"]]
        summary = summarise(case)
        summary["subject_mass_frame_to_frame_max_change"] = round(float(max(
            abs(b - a) / max(a, 1) for a, b in zip(masses, masses[1:]))), 3)
        results["cases"]["four_people"] = {"summary": summary, "frames": case["frames"]}
        print("four_people", json.dumps(summary))
        del frames
    layers = person_layers(network, args.frames)
    for kind in MADE_CASES:
        frames, truth, whole, point = made_case(kind, layers, args.frames)
        case = run_case(network, frames, point, truth=truth, whole=whole)
        summary = summarise(case)
        summary["subject_point"] = [round(v) for v in point]
        results["cases"][kind] = {"summary": summary, "frames": case["frames"]}
        print(kind, json.dumps(summary))
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
