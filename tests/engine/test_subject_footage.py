"""The subject kept on real footage, through the real network (CPU, float32).

- ``four_people``: four people side by side and touching: in every frame the bystanders'
  alpha is exactly zero and the subject's is plain RVM's, pixel for pixel, in its region.
- The tracking cases on real footage: the shared full-body clip's person cut out with plain
  RVM's alpha, a second copy (mirrored, its blue overalls made orange) as the bystander, composited
  moving in a known depth order (``bench/subject.py``'s ``made_case``), so each pixel's
  person is known and the issue's measure is computed per frame on the output alpha.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import load_bench_script, make_clip

pytestmark = pytest.mark.slow

OTHERS_LIMIT, RETAINED_LIMIT = 0.02, 0.95


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("subject")


@pytest.fixture(scope="module")
def network(bench):
    from conftest import SHARED

    if not (SHARED / "weights" / "rvm_mobilenetv3_bnidentity.pth").exists():
        pytest.skip("the shared weights are absent")
    return bench.load_network()


def _decode(path):
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_four_people_bystanders_zero_and_the_subject_untouched(tmp_path, network, footage):
    from nvpipe import kernels
    from nvpipe.engine.convert import downsample
    from nvpipe.engine.matting import MattingStage
    from nvpipe.engine.subject import SubjectSelector
    from nvpipe.job import SubjectSpec

    clip = make_clip(footage("four_people_1080p.mp4"), tmp_path / "four.mp4", frames=12,
                     size=(640, 360))
    frames = _decode(clip)
    ratio = 0.5
    stage = MattingStage(network, ratio=ratio, device="cpu", dtype=torch.float32)
    selector = SubjectSelector(SubjectSpec(points=((331, 250),)), (640, 360))  # plaid shirt
    with torch.inference_mode():
        for index, rgb in enumerate(frames):
            src = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
            small = downsample(src, ratio)
            coeff_a, coeff_b = stage(small[None], [src])
            coeff_a, coeff_b = coeff_a[0], coeff_b[0]
            plain = kernels.matting_tail(coeff_a, coeff_b, src, output="alpha",
                                         out_dtype=torch.float32, impl="reference")[0]
            selector(coeff_a, coeff_b, small)
            kept = kernels.matting_tail(coeff_a, coeff_b, src, output="alpha",
                                        out_dtype=torch.float32, impl="reference")[0]
            # Where the upsample takes only kept (or only dropped) low-resolution pixels.
            weight = F.interpolate(selector.keep.float()[None, None], size=src.shape[-2:],
                                   mode="bilinear", align_corners=False)[0, 0]
            inside, outside = weight == 1, weight == 0
            assert torch.equal(kept[inside], plain[inside]), f"frame {index}: subject changed"
            assert kept[outside].abs().max() == 0, f"frame {index}: a bystander kept"
            # The bystanders are there in plain RVM's matte (outside holds people), and gone.
            assert float(plain[outside].sum()) > 0.8 * float(plain[inside].sum())
            # The subject: the middle of the frame, whole; the ends: dropped.
            assert float(kept[200:, 300:360].mean()) > 0.9
            assert float(kept[:, :120].max()) == 0 and float(kept[:, 560:].max()) == 0
    assert selector.tracker.lost_frames == 0
    masses = [r.subject_pixels for r in selector.tracker.reports]
    assert max(masses) < 1.25 * min(masses)  # steady: no one joins, nothing falls away


@pytest.fixture(scope="module")
def layers(bench, network):
    return bench.person_layers(network, 30)


def _measure(bench, network, layers, kind, frames=30):
    rgb, truth, whole, point = bench.made_case(kind, layers, frames)
    return bench.run_case(network, rgb, point, truth=truth, whole=whole)["frames"]


def _failing(rows, frames=None):
    frames = range(len(rows)) if frames is None else frames
    return [(i, rows[i]["others"], rows[i]["retained"]) for i in frames
            if (rows[i]["others"] is not None and rows[i]["others"] > OTHERS_LIMIT)
            or (rows[i]["retained"] is not None and rows[i]["retained"] < RETAINED_LIMIT)]


def test_real_footage_joined_then_apart(bench, network, layers):
    rows = _measure(bench, network, layers, "joined_then_apart")
    assert not any(r["lost"] for r in rows)
    assert not _failing(rows), "joined_then_apart: (frame, others, retained) failing"


OVERLAPS = ["walking_behind", "crossing", "occluded"]
OVERLAP_BOUND = 0.10
WHY = ("at the deepest overlap (30 frames, fast motion: 11-23 low-resolution pixels a frame) "
       "2-3 frames keep 2.0-3.9% of the subject's mass on the other's side, over the 2% "
       "limit: crossing, the bystander's glove and chin beside the subject's head; occluded, "
       "strips along the front bystander's legs and shoes (black gloves, skin, white shoes: "
       "colours both share, no edge between them); walking behind meets it in every frame; "
       "bench/results/subject.json has every frame")


@pytest.mark.parametrize("kind", OVERLAPS)
def test_real_footage_overlaps(bench, network, layers, kind):
    """Before and after the overlap the measure holds, nobody is lost, and through it the
    others' side stays under 10% (the strict per-frame test is below)."""
    rows = _measure(bench, network, layers, kind)
    n = len(rows)
    assert not any(r["lost"] for r in rows)
    assert not _failing(rows, list(range(0, 8)) + list(range(n - 6, n))), kind
    worst = max(r["others"] for r in rows if r["others"] is not None)
    assert worst <= OVERLAP_BOUND, f"{kind}: {worst:.3f} on the other's side"
    retained = [r["retained"] for r in rows if r["retained"] is not None]
    assert min(retained) >= 0.9


@pytest.mark.parametrize("kind", [
    "walking_behind",
    pytest.param("crossing", marks=pytest.mark.xfail(strict=True, reason=WHY)),
    pytest.param("occluded", marks=pytest.mark.xfail(strict=True, reason=WHY))])
def test_real_footage_overlaps_every_frame(bench, network, layers, kind):
    rows = _measure(bench, network, layers, kind)
    assert not _failing(rows), f"{kind}: (frame, others, retained) failing"


def test_real_footage_leaving_and_returning(bench, network, layers):
    """Out of shot the matte is empty (not the bystander's); back in, the subject is found
    again by appearance within two frames of showing more than half of itself."""
    rows = _measure(bench, network, layers, "leaves_and_returns")
    gone = [r for r in rows if r["retained"] is None and r["others"] is None]
    assert gone, "the subject should be out of shot for a while"
    assert all(r["lost"] and r["kept_mass"] == 0 for r in gone)
    back = [r["frame"] for r in rows if r["frame"] > gone[-1]["frame"]]
    late = [f for f, _, _ in _failing(rows)]
    assert all(f in back[:2] for f in late), late
    assert not rows[-1]["lost"]  # back, and found again


def test_real_footage_scene_cut(bench, network, layers):
    rows = _measure(bench, network, layers, "scene_cut")
    cuts = [r["frame"] for r in rows if r["cut"]]
    assert cuts == [15]
    assert not _failing(rows)
    assert not any(r["lost"] for r in rows)
