"""Keep the subject: one person (or a few) matted, everyone else's alpha zero.

Applied once per frame on the network's low-resolution alpha, between the matting stage and
the full-resolution tail (``nvpipe.engine.runner.Pipeline.matte``, ``MattingSession``), so
the full-size frames cost nothing extra: the alpha channel of the refiner's coefficients
``(A, b)`` is zeroed outside the subject's territory, and the tail's ``pha = up(A) * x + up(b)``
is then exactly 0 there.

What a frame goes through (``SubjectTracker.step``, NumPy/SciPy/scikit-image on the host):

1. **Who is there.** ``pha > FOREGROUND`` (0.25) is where people are; its connected
   components (8-connected). Components smaller than ``MIN_PERSON`` of the frame are strays
   (a hand, a held object, a fleck): joined to the nearest person within ``ATTACH`` of the
   frame's longer side, else nobody's.
2. **Tracking** (every frame but the first and a cut's). Every person known (a track: the
   subject's and the bystanders') has a *template* (its region when last seen mostly whole),
   a position and a velocity. Each template is moved to where the track is predicted now;
   the pixels that only one prediction covers, eroded by ``MARGIN`` pixels, are that track's
   seeds; a watershed over the colour edges of the frame (``mask`` = the people) gives every
   other person pixel to the seed it floods from first. So touching people are split along
   the colour edge between them, a person passing in front keeps the pixels where the
   predictions overlap (the occluding contour is the edge), and a person walking behind
   keeps coming out on the other side: a track hidden for a while coasts at its velocity
   (its template kept, ``COAST_FRAMES`` at most) and claims its pixels back as they show.
   - **Motion.** Each track's pixels in the last frame are matched to this one (the
     displacement within ``MOTION_SEARCH`` of its velocity whose colours differ least); a
     person pixel whose colour that shifted last frame explains better by ``MOTION_MARGIN``
     than any other track's moved with that track. Such pixels decide overlaps the colours
     leave open and, where no seed reaches, are that track's before the watershed (people
     moving differently are told apart where they share colours: shoes, skin, gloves).
   - **Depth.** Where two predictions overlap, the one whose own colours show there
     (``DEPTH_MARGIN`` times the other's) is in front, kept until the colours say
     otherwise; the rest of the overlap is the front one's. A track in front of everyone it
     overlaps shows all of itself, so its prediction is its last frame's region moved by
     its matched displacement (within ``DRIFT`` of its template): a template kept from
     before the overlap misses how its arms moved since.
3. **New people** (components no seed reaches) are split into people by their heads (peaks
   of the component's top outline, each the seed of a column band down the body, then the
   same watershed). A lost subject is re-found among them by appearance (below).
4. **Appearance.** Each track keeps an 8x8x8 RGB histogram of its confident pixels
   (``pha > 0.5``), updated while it is seen whole. Two tracks that were merged and come
   apart are swapped when their histograms match each other's models better (by
   ``SWAP_MARGIN``). **Re-finding rule** (after a scene cut, or when a lost subject may have
   come back): a person is the subject when the Bhattacharyya distance between its histogram
   and the subject's model is under ``REFIND_DISTANCE`` (0.35), and lower than to every
   bystander's model; the closest such person wins. Someone first seen in the last
   ``RECLAIM_FRAMES`` (24) frames is checked again each frame while the subject is lost
   (a person coming back in at the frame's edge shows too little at first). Position is not
   used: after a cut it means nothing.
5. **Keep mask.** Every pixel belongs to the nearest labelled person pixel (a Euclidean
   distance transform): the subject's soft edges, hair and motion blur lie nearer to the
   subject than to anyone else, so they stay. The subject's territory is dilated by one
   low-resolution pixel into the background, so every full-size pixel the bilinear upsample
   takes from there is exactly what plain RVM gives; never into another person, so a
   bystander's alpha is exactly 0 everywhere. Where the subject touches someone, the
   subject's side gives up to half a low-resolution pixel (``0.5 / ratio`` full-size pixels)
   along the contact line: the issue's measure allows the subject 5% and the others 2%,
   so the subject gives way (the other choice leaked 3-8% of a half-hidden subject's mass
   onto the bystander in the occlusion tests).

When the subject is nowhere (out of shot, or not re-found after a cut) the alpha is zero.

The tracker runs on the selector's own thread (``SubjectSelector.submit``/``apply``): the
runner applies a chunk's masks after the next chunk's network call, so on the CPU the
tracker shares the cores with the network instead of following it (four_people at 640x360,
120 frames, 2 cores: 16.5-18.9 s against 21.2-21.8 s, the same output:
``bench/results/subject-pipelined.json``).

On CUDA the low-resolution alpha and colours (4 bytes a pixel: 0.6 MB at 512x288) are
copied to the host and the keep mask (one byte a pixel) back: the watershed has no GPU
implementation in CuPy/cuCIM, and every decision (which component is whom) needs the host
anyway, so labelling on the device (``cupyx.scipy.ndimage.label``) would still end in the
same synchronisation per frame. ``bench/subject.py`` measures the host side's cost per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from nvpipe.errors import NvpipeError
from nvpipe.job import SubjectSpec, parse_subject, subject_spec  # noqa: F401 - re-exported

# -- the rules' numbers (stated in the module docstring) --------------------------------------
FOREGROUND = 0.25        # alpha above which a pixel is someone's
CONFIDENT = 0.5          # alpha above which a pixel's colour counts for appearance
MIN_PERSON = 0.003       # a component smaller than this share of the frame is a stray
ATTACH = 0.03            # a stray this close (share of the longer side) to a person is theirs
NEAREST = 0.05           # --subject X,Y on nobody: the nearest person within this share of
                         # the input's longer side
MARGIN = 2               # seeds: the predicted regions eroded by this many pixels
WHOLE = 0.05             # seen within this share of its usual area: whole (less: partly
                         # hidden; more: it took someone coming out from behind it)
SEED_LIKELIHOOD = 0.25   # a seed pixel's colour is at least this likely for its track as
                         # for the likeliest other track
SETTLE_FRAMES = 12       # touching someone this long (all whole): its region is its shape
AREA_RATE = 0.1          # EMA weight of the newest area (a lasting change becomes usual)
COAST_FRAMES = 48        # a hidden track keeps moving at its velocity this long
FORGET_FRAMES = 240      # a bystander unseen this long is forgotten (the subject never is)
VELOCITY_SMOOTHING = 0.5  # EMA weight of the newest displacement
APPEARANCE_RATE = 0.1    # EMA weight of the newest histogram
HISTOGRAM_BINS = 8       # per channel: 512 RGB bins
REFIND_DISTANCE = 0.35   # Bhattacharyya distance under which a person is the subject again
RECLAIM_FRAMES = 24      # a track this young may turn out to be the lost subject come back
DRIFT = 2                # a front track's last region, moved, is its shape within this many
                         # pixels of its template (farther only where its motion says so)
MOTION_SEARCH = 2        # displacements tried around a track's velocity (pixels)
MOTION_MARGIN = 30       # a pixel moved with a track: its colour difference lower by this
DEPTH_EVIDENCE = 0.1     # who is in front: judged once this share of an overlap shows
DEPTH_MARGIN = 2.0       # ... one of the two people's colours this many times the other's
SWAP_MARGIN = 0.05       # two tracks that came apart swap when that matches better by this
HEAD_PROMINENCE = 0.12   # a head rises this share of its component's height above its
                         # neighbours' outline ...
HEAD_WIDTH = 0.25        # ... and is at least this share of that rise wide (not a hand)
PERSON_SHARE = 0.3       # a part of a split smaller than this share of the largest is no person
EDGE_SMOOTHING = 1.0     # Gaussian sigma (pixels) of the colours before their edges
BOUNDARY_SMOOTHING = 2.0  # Gaussian sigma (pixels) of each person's region where people touch


# -- image helpers (NumPy; h x w arrays) ----------------------------------------------------------
def _ndi():
    from scipy import ndimage

    return ndimage


EIGHT = np.ones((3, 3), dtype=bool)


def shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by (dy, dx) pixels, what leaves the frame dropped."""
    if dy == 0 and dx == 0:
        return mask
    out = np.zeros_like(mask)
    h, w = mask.shape[:2]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = mask[ys, xs]
    return out


def _grown(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by a (2r+1)-pixel square (a separable maximum filter: fast).

    Filtered only over ``mask``'s bounding box grown by ``radius``: beyond it the answer is
    False, and the filter's reflection at the box's inner edges reaches no set pixel, so the
    result equals the whole frame's (a person is a fifth of a frame: 3.8 of 38 ms a frame
    went to these filters over whole frames)."""
    out = np.zeros_like(mask)
    if mask.any():
        box = bounding_box(mask, pad=radius)
        out[box] = _ndi().maximum_filter(np.ascontiguousarray(mask[box]).view(np.uint8),
                                         size=2 * radius + 1).view(bool)
    return out


def _shrunk(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` eroded by a (2r+1)-pixel square (pixels beyond the frame count as inside);
    over ``mask``'s bounding box grown by ``radius``, as ``_grown``."""
    out = np.zeros_like(mask)
    if mask.any():
        box = bounding_box(mask, pad=radius)
        out[box] = _ndi().minimum_filter(np.ascontiguousarray(mask[box]).view(np.uint8),
                                         size=2 * radius + 1, mode="nearest").view(bool)
    return out


def present_ids(values: np.ndarray) -> np.ndarray:
    """The distinct positive values of an int array, ascending: ``np.unique``'s answer by a
    count (ids are small; a fifth of its time on a frame of labels)."""
    counts = np.bincount(np.maximum(values, 0).ravel())
    counts[:1] = 0
    return np.flatnonzero(counts)


def bounding_box(mask: np.ndarray, pad: int = 0):
    """``(rows slice, columns slice)`` around ``mask``'s pixels, ``pad`` more each side."""
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    return (slice(max(0, rows[0] - pad), rows[-1] + pad + 1),
            slice(max(0, cols[0] - pad), cols[-1] + pad + 1))


class EdgeMap:
    """``colour_edges`` of one frame, computed only where asked (``crop(box)``), since the
    watershed only floods the few pixels between seeds."""

    PAD = 4  # the filters' reach: a crop's edges equal the whole frame's

    def __init__(self, rgb: np.ndarray):
        self.rgb = rgb

    def crop(self, box) -> np.ndarray:
        rows, cols = box
        h, w = self.rgb.shape[:2]
        r0, r1 = max(0, rows.start - self.PAD), min(h, rows.stop + self.PAD)
        c0, c1 = max(0, cols.start - self.PAD), min(w, cols.stop + self.PAD)
        edges = colour_edges(self.rgb[r0:r1, c0:c1])
        return edges[rows.start - r0:rows.start - r0 + (min(h, rows.stop) - rows.start),
                     cols.start - c0:cols.start - c0 + (min(w, cols.stop) - cols.start)]


def colour_edges(rgb: np.ndarray) -> np.ndarray:
    """The watershed's elevation: the largest per-channel Sobel gradient magnitude of
    ``rgb`` (h, w, 3 uint8), float32, each channel smoothed first (``EDGE_SMOOTHING``: a
    patterned shirt's texture is not a boundary between people); ``kernels.colour_edges``."""
    from nvpipe import kernels

    return kernels.colour_edges(rgb, EDGE_SMOOTHING)


def colour_bins(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's histogram bin (h, w) int32: 8 levels per channel."""
    levels = int(math.log2(HISTOGRAM_BINS))
    quantised = rgb >> (8 - levels)  # uint8, then widened once: a third of the time
    bins = quantised[..., 0].astype(np.int32) << (2 * levels)
    bins |= quantised[..., 1].astype(np.int32) << levels
    bins |= quantised[..., 2]
    return bins


def colour_histogram(rgb: Optional[np.ndarray], where: np.ndarray,
                     bins: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Normalised 8x8x8 RGB histogram of the pixels ``where`` (None when there are none);
    ``bins``: ``colour_bins(rgb)`` already computed (``rgb`` is then not read)."""
    index = (colour_bins(rgb) if bins is None else bins)[where]
    if len(index) == 0:
        return None
    counts = np.bincount(index, minlength=HISTOGRAM_BINS ** 3).astype(np.float64)
    return counts / counts.sum()


def bhattacharyya(p: Optional[np.ndarray], q: Optional[np.ndarray]) -> float:
    """``sqrt(1 - sum(sqrt(p q)))``: 0 for equal histograms, 1 for disjoint ones."""
    if p is None or q is None:
        return 1.0
    return float(math.sqrt(max(0.0, 1.0 - float(np.sqrt(p * q).sum()))))


def find_heads(component: np.ndarray) -> list[tuple[int, int]]:
    """``(column, rise)`` of the heads of the people in one component (h x w bool): peaks
    of its top outline rising ``HEAD_PROMINENCE`` of its height above the outline beside
    them and at least ``HEAD_WIDTH`` of that rise wide. At least one (the highest point)."""
    from scipy.signal import find_peaks

    rows = np.nonzero(component.any(axis=1))[0]
    columns = component.any(axis=0)
    height = rows[-1] - rows[0] + 1
    top = np.where(columns, component.argmax(axis=0), component.shape[0])
    outline = np.where(columns, component.shape[0] - top, 0).astype(np.float64)
    padded = np.concatenate([[0.0], outline, [0.0]])  # heads at the frame's edges count
    prominence = max(2.0, HEAD_PROMINENCE * height)
    peaks, props = find_peaks(padded, prominence=prominence, width=1)
    heads = [(int(p - 1), int(rise)) for p, width, rise
             in zip(peaks, props["widths"], props["prominences"]) if width >= HEAD_WIDTH * rise]
    if not heads:
        heads = [(int(np.argmax(outline)), int(height))]
    return heads


def split_people(component: np.ndarray, edges: "EdgeMap | np.ndarray") -> list[np.ndarray]:
    """One component (bool) -> one mask per person: each head (its top down to its
    shoulders, a column band a third of the way to the next head) seeds a watershed over
    the colour edges, which floods the bodies below."""
    from skimage.segmentation import watershed

    heads = sorted(find_heads(component))
    if len(heads) == 1:
        return [component]
    markers = np.zeros(component.shape, np.int32)
    columns = component.any(axis=0)
    top = np.where(columns, component.argmax(axis=0), component.shape[0])
    xs = [x for x, _ in heads]
    for i, (x, rise) in enumerate(heads):
        gaps = [abs(x - other) for other in xs if other != x]
        half = max(1, min(gaps) // 6)
        band = np.zeros_like(component)
        band[top[x]:top[x] + rise, max(0, x - half):x + half + 1] = True
        markers[band & component] = i + 1
    box = bounding_box(component)
    elevation = edges.crop(box) if isinstance(edges, EdgeMap) else edges[box]
    labels = np.zeros(component.shape, np.int32)
    labels[box] = watershed(elevation, markers[box], mask=component[box])
    labels = smooth_labels(labels, component)
    return _merge_small_parts([labels == i + 1 for i in range(len(heads))
                               if (labels == i + 1).any()])


def _merge_small_parts(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Parts smaller than ``PERSON_SHARE`` of the largest are not people (a raised hand
    took the top of the outline, so the head looked like a second one): each joins the
    part it shares the longest border with."""
    parts = list(parts)
    while len(parts) > 1:
        areas = [int(p.sum()) for p in parts]
        smallest = int(np.argmin(areas))
        if areas[smallest] >= PERSON_SHARE * max(areas):
            break
        ring = _grown(parts[smallest], 1) & ~parts[smallest]
        contact = [int((ring & p).sum()) if i != smallest else -1 for i, p in enumerate(parts)]
        target = int(np.argmax(contact))
        parts[target] = parts[target] | parts[smallest]
        del parts[smallest]
    return parts


def smooth_labels(labels: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Each pixel of ``where`` to the person whose region, blurred by
    ``BOUNDARY_SMOOTHING``, is strongest there: the ragged boundary a watershed leaves in
    texture becomes a smooth one. Pixels outside ``where`` and labels <= 0 stay. The blur
    is ``kernels.gaussian_blur`` (SciPy's, by the C kernel: a tenth of a frame's tracking)."""
    from nvpipe import kernels

    ids = present_ids(labels[where]).tolist()
    if len(ids) < 2:
        return labels
    rows = np.nonzero(where.any(axis=1))[0]
    cols = np.nonzero(where.any(axis=0))[0]
    pad = int(3 * BOUNDARY_SMOOTHING) + 1
    box = (slice(max(0, rows[0] - pad), rows[-1] + pad + 1),
           slice(max(0, cols[0] - pad), cols[-1] + pad + 1))
    crop = labels[box]
    # The first strongest, as argmax over a stack would give, without the stack: one
    # comparison a person (an argmax across planes cost as much as the blurs).
    best = np.full(crop.shape, ids[0], np.int32)
    strongest = kernels.gaussian_blur((crop == ids[0]).astype(np.float32), BOUNDARY_SMOOTHING)
    for i in ids[1:]:
        strength = kernels.gaussian_blur((crop == i).astype(np.float32), BOUNDARY_SMOOTHING)
        stronger = strength > strongest
        best[stronger] = i
        np.maximum(strongest, strength, out=strongest)
    inside = where[box] & (crop > 0)
    out = labels.copy()
    out[box][inside] = best[inside]
    return out


# -- the tracks -------------------------------------------------------------------------------
@dataclass
class Track:
    """One person over time."""

    id: int
    subject: bool
    template: np.ndarray               # bool (h, w): the region when last seen mostly whole
    template_at: tuple                 # (y, x): the template's centroid
    position: tuple                    # (y, x): where the track is now (predicted or seen)
    velocity: tuple = (0.0, 0.0)       # pixels per frame
    appearance: Optional[np.ndarray] = None
    last_seen: int = 0
    hidden: int = 0                    # frames in a row not seen mostly whole
    visible: int = 0                   # pixels this frame
    whole_before: bool = False         # seen mostly whole in the frame before
    area: float = 0.0                  # its usual area (pixels), followed while seen whole
    merged: int = 0                    # frames in a row touching someone
    born: int = 0                      # the frame it was first seen

    def predicted(self) -> np.ndarray:
        dy = int(round(self.position[0] - self.template_at[0]))
        dx = int(round(self.position[1] - self.template_at[1]))
        return shifted(self.template, dy, dx)


def _centroid(mask: np.ndarray) -> tuple:
    ys, xs = np.nonzero(mask)
    return (float(ys.mean()), float(xs.mean()))


@dataclass
class FrameReport:
    """What the tracker decided for one frame."""

    index: int
    people: int             # people found (tracks seen)
    subject_pixels: int     # low-resolution pixels labelled as the subject
    lost: bool              # the subject is nowhere (alpha zero)
    refound: bool = False   # the subject was found again by appearance this frame
    cut: bool = False


class SubjectTracker:
    """The host side: ``step(pha, rgb, cut)`` -> keep mask, per frame, at one resolution.

    ``pha`` float (h, w) in [0, 1] (the network's low-resolution alpha), ``rgb`` uint8
    (h, w, 3) (its input). ``input_size`` (W, H) is the size ``spec``'s points are in.
    ``labels`` holds the last frame's people (0: nobody, track ids); ``reports`` one
    ``FrameReport`` a frame.
    """

    def __init__(self, spec: SubjectSpec, input_size: tuple[int, int]):
        # Imported now, not in the first frame's time (about a second, once), and the C
        # kernels loaded (built, the first time on a machine: a few seconds).
        import importlib

        for module in ("scipy.signal", "skimage.segmentation"):
            importlib.import_module(module)
        from nvpipe.kernels import native

        native.library()

        self.spec = spec
        self.input_size = input_size
        self.tracks: dict[int, Track] = {}
        self._next_id = 1
        self.frame = -1
        self.chosen = False
        self.labels: Optional[np.ndarray] = None
        self.reports: list[FrameReport] = []
        self.first_people = 0       # people found in the frame the subject was chosen in
        self.chosen_at: Optional[tuple] = None  # the subject's centre there, input pixels
        self._mask_image: Optional[np.ndarray] = None
        self.depth: dict[tuple, int] = {}  # (id, id) -> the id in front
        self._previous: Optional[np.ndarray] = None  # the last frame's colours
        self._moved = np.zeros((0, 0), np.int32)  # _motion's answer this frame
        self._bins = np.zeros((0, 0), np.int32)  # colour_bins of this frame
        # _touching_pairs' last answer and the labels it was for: _update, _unswap and the
        # next frame's _merged_groups ask about the same labels (3 labellings -> 1 a frame).
        self._pairs: Optional[tuple[np.ndarray, list]] = None

    # ---- public ------------------------------------------------------------------------
    def step(self, pha: np.ndarray, rgb: np.ndarray, cut: bool = False) -> np.ndarray:
        self.frame += 1
        h, w = pha.shape
        fg = pha > FOREGROUND
        edges = EdgeMap(rgb)
        self._bins = colour_bins(rgb)  # every histogram and likelihood of this frame
        refound = False
        if not self.chosen:
            labels = self._first_frame(fg, edges, pha)
        elif cut:
            labels, refound = self._after_cut(fg, edges, pha)
        else:
            labels, refound = self._track(fg, edges, rgb, pha)
        self.labels = labels
        self._previous = rgb
        self.depth = {pair: front for pair, front in self.depth.items()
                      if pair[0] in self.tracks and pair[1] in self.tracks}  # the forgotten
        keep = self._keep(labels, fg)
        subject_ids = {t.id for t in self.tracks.values() if t.subject}
        subject_pixels = int(np.isin(labels, list(subject_ids)).sum()) if subject_ids else 0
        seen = len(present_ids(labels))
        self.reports.append(FrameReport(self.frame, seen, subject_pixels,
                                        lost=self.chosen and subject_pixels == 0,
                                        refound=refound, cut=cut))
        return keep

    @property
    def lost_frames(self) -> int:
        return sum(r.lost for r in self.reports)

    def describe(self) -> str:
        """One phrase for the run's summary."""
        if not self.chosen:
            return f"subject: {self.spec.describe()}, not found (nobody in shot)"
        where = ""
        if self.chosen_at is not None and not self.spec.points:
            where = f" (at {self.chosen_at[0]:.0f},{self.chosen_at[1]:.0f})"
        text = f"subject: {self.spec.describe()}{where}, " + (
            "the only person in the first frame" if self.first_people == 1 else
            f"one of {self.first_people} people in the first frame")
        lost = self.lost_frames
        refound = sum(r.refound for r in self.reports)
        if lost:
            text += f"; absent (alpha zero) in {lost} frame{'s' * (lost > 1)}"
        if refound:
            text += f", found again {refound} time{'s' * (refound > 1)} by appearance"
        return text

    def _histogram(self, where: np.ndarray) -> Optional[np.ndarray]:
        """``colour_histogram`` of this frame's pixels ``where`` (its bins computed once)."""
        return colour_histogram(None, where, self._bins)

    # ---- people --------------------------------------------------------------------------
    def _components(self, fg: np.ndarray):
        labels, count = _ndi().label(fg, structure=EIGHT)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        return labels, count, sizes

    def _min_person(self, shape) -> int:
        return max(4, int(MIN_PERSON * shape[0] * shape[1]))

    def _segment(self, fg: np.ndarray, edges: np.ndarray, only: Optional[np.ndarray] = None
                 ) -> list[np.ndarray]:
        """The people in ``fg`` (within ``only``), each a bool mask, strays left out."""
        region = fg if only is None else fg & only
        components, count, sizes = self._components(region)
        people = []
        small = self._min_person(fg.shape)
        for index in range(1, count + 1):
            if sizes[index] < small:
                continue
            component = components == index
            people += split_people(component, edges)
        return people

    def _new_track(self, mask: np.ndarray, pha: np.ndarray, subject: bool) -> Track:
        at = _centroid(mask)
        track = Track(self._next_id, subject, mask.copy(), at, at,
                      appearance=self._histogram(mask & (pha > CONFIDENT)),
                      last_seen=self.frame, whole_before=True, area=float(mask.sum()),
                      born=self.frame)
        self._next_id += 1
        self.tracks[track.id] = track
        return track

    def _to_low(self, x: float, y: float, shape) -> tuple[int, int]:
        width, height = self.input_size
        h, w = shape
        col = int(np.clip(round((x + 0.5) * w / width - 0.5), 0, w - 1))
        row = int(np.clip(round((y + 0.5) * h / height - 0.5), 0, h - 1))
        return row, col

    def _to_input(self, mask: np.ndarray) -> tuple[float, float]:
        width, height = self.input_size
        y, x = _centroid(mask)
        return ((x + 0.5) * width / mask.shape[1] - 0.5, (y + 0.5) * height / mask.shape[0] - 0.5)

    def _first_frame(self, fg, edges, pha) -> np.ndarray:
        labels = np.zeros(fg.shape, np.int32)
        if self.spec.mask:
            wanted = self._load_mask(fg.shape) & fg
            if not wanted.any():
                raise NvpipeError(f"the subject mask {self.spec.mask} covers nobody the "
                                  "network sees in the first frame")
            people = [wanted] + self._segment(fg, edges, only=~wanted)
            subjects = {0}
        else:
            people = self._segment(fg, edges)
            if not people:
                if self.spec.main:
                    return labels  # nobody yet: the first frame with someone chooses
                raise NvpipeError("the first frame shows nobody to choose as the subject")
            subjects = self._choose(people, fg.shape)
        self.first_people = len(people)
        for i, person in enumerate(people):
            track = self._new_track(person, pha, subject=i in subjects)
            labels[person & (labels == 0)] = track.id
        union = np.zeros(fg.shape, bool)
        for i in subjects:
            union |= people[i]
        self.chosen_at = self._to_input(union)
        self.chosen = True
        return self._attach_strays(labels, fg)

    def _choose(self, people: list[np.ndarray], shape) -> set[int]:
        if self.spec.main:
            return {int(np.argmax([p.sum() for p in people]))}
        owner = np.zeros(shape, np.int32)
        for i, person in enumerate(people):
            owner[person & (owner == 0)] = i + 1
        chosen = set()
        width, height = self.input_size
        limit = NEAREST * max(width, height)
        ndi = _ndi()
        distance, (iy, ix) = ndi.distance_transform_edt(owner == 0, return_indices=True)
        for x, y in self.spec.points:
            if x >= width or y >= height:
                raise NvpipeError(f"--subject {x:g},{y:g} is outside the {width}x{height} "
                                  "frame")
            row, col = self._to_low(x, y, shape)
            who = owner[row, col]
            if who == 0:
                # The distance in input pixels (the low resolution's scale back up).
                scale = width / shape[1]
                if distance[row, col] * scale <= limit:
                    who = owner[iy[row, col], ix[row, col]]
            if who == 0:
                places = "; ".join(
                    f"{cx:.0f},{cy:.0f}" for cx, cy in (self._to_input(p) for p in people))
                raise NvpipeError(
                    f"--subject {x:g},{y:g} is on nobody (nobody within {limit:.0f} pixels); "
                    f"the people in the first frame are centred at {places}")
            chosen.add(int(who) - 1)
        return chosen

    def _load_mask(self, shape) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(self.spec.mask) as image:
                grey = image.convert("L").resize((shape[1], shape[0]), Image.BILINEAR)
        except (OSError, ValueError) as error:
            raise NvpipeError(f"cannot read the subject mask {self.spec.mask}: {error}") from None
        return np.asarray(grey) > 127

    # ---- frame to frame -------------------------------------------------------------------
    def _track(self, fg, edges, rgb, pha) -> tuple[np.ndarray, bool]:
        from skimage.segmentation import watershed

        live = [t for t in self.tracks.values() if t.hidden <= COAST_FRAMES]
        markers = self._seeds(live, fg, rgb)
        # Pixels no seed holds that one track's motion clearly explains (``_motion``): that
        # track's, before the watershed floods the rest (it flooded a shoe from the other
        # person's shoe, white on white, in the walking-behind case).
        followed = (markers == 0) & (self._moved > 0)
        markers[followed] = self._moved[followed]
        labels = markers.copy()
        unseeded = fg & (markers == 0)
        if markers.any() and unseeded.any():
            # Only where the seeds leave pixels to flood (and the seeds beside them).
            box = bounding_box(unseeded, pad=EdgeMap.PAD)
            # The unseeded pixels and the seeds that border them: the rest is settled.
            around = fg[box] & _grown(np.ascontiguousarray(unseeded[box]), 1)
            labels[box] = np.where(around, watershed(edges.crop(box), markers[box] * around,
                                                     mask=around), labels[box])
        # Smoothed where the watershed flooded; the seeds stay (a thin strip of someone
        # showing past the person in front is theirs, however thin).
        labels = smooth_labels(labels.astype(np.int32), fg & (markers == 0))
        merged_before = self._merged_groups(self.labels)
        refound = self._new_people(labels, fg, edges, pha)
        labels = self._attach_strays(labels, fg)
        self._update(labels, fg, pha)
        self._unswap(labels, merged_before, pha)
        refound = self._reclaim(labels, pha) or refound
        return labels, refound

    def _reclaim(self, labels, pha) -> bool:
        """A lost subject may have come back as someone new a few frames ago, first seen
        too little of (coming in at the frame's edge) to be recognised: a young track
        (``RECLAIM_FRAMES``) that now matches the subject by the re-finding rule becomes
        the subject."""
        lost = [t for t in self.tracks.values() if t.subject and t.visible == 0]
        if not lost:
            return False
        young = [t for t in self.tracks.values() if not t.subject and t.visible
                 and self.frame - t.born <= RECLAIM_FRAMES]
        if not young:
            return False
        others = [t for t in self.tracks.values() if not t.subject]
        found = False
        for track in lost:
            best, best_distance = None, REFIND_DISTANCE
            for candidate in young:
                histogram = self._histogram((labels == candidate.id) & (pha > CONFIDENT))
                distance = bhattacharyya(histogram, track.appearance)
                rivals = min((bhattacharyya(histogram, o.appearance) for o in others
                              if o is not candidate and self.frame - o.born > RECLAIM_FRAMES),
                             default=1.0)
                if distance < best_distance and distance < rivals:
                    best, best_distance = candidate, distance
            if best is not None:
                labels[labels == best.id] = track.id
                self._relabelled()
                track.template, track.template_at = best.template, best.template_at
                track.position, track.velocity = best.position, best.velocity
                track.area, track.hidden, track.visible = best.area, best.hidden, best.visible
                track.whole_before, track.merged = best.whole_before, best.merged
                track.last_seen = self.frame
                del self.tracks[best.id]
                young.remove(best)
                found = True
        return found

    def _seeds(self, live: list[Track], fg: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """The watershed's markers (track ids; 0 elsewhere) from the tracks' predictions.

        - Where one prediction alone covers a pixel, it is that track's.
        - Where several overlap (one person in front of another), a colour decisively one
          of theirs (``SEED_LIKELIHOOD``) decides; where it does not (skin, say), the motion
          (``_motion``); where neither does, the one in front (``_judge_depth``; not judged
          yet: the one seen whole is in front of those partly hidden) takes the pixel.
        - Each track's own share, eroded by ``MARGIN`` (its prediction may be a little off),
          is its seed, less the pixels whose colour is clearly someone else's; the
          overlaps decided as above are seeds as they are.
        - Besides, any person pixel near a track's prediction (``2 * MARGIN`` and half its
          speed) whose colour is
          decisively that track's (against every other track) seeds it, unshrunk: a thin
          strip of someone showing past the person in front is theirs.
        """
        shape = fg.shape
        markers = np.zeros(shape, np.int32)
        self._moved = markers.copy()
        if not live:
            return markers
        predictions = {t.id: t.predicted() for t in live}
        moved = self._moved = self._motion(live, fg, rgb, predictions)
        # In front of everyone it overlaps, a track shows all of itself: its last frame's
        # region moved by its matched displacement is its shape now (a template kept from
        # before the overlap misses how its arms moved since).
        # (Its template grown by ``DRIFT`` bounds it: else the pixels it took from someone
        # re-emerging behind it, skin on skin, stayed its own frame after frame.)
        for track in live:
            if track.id not in self._shifts or not track.visible:
                continue
            overlapping = [o for o in live if o is not track
                           and (predictions[o.id] & predictions[track.id]).any()]
            if overlapping and not any(self._in_front(o, track) for o in overlapping):
                moved_region = shifted(self.labels == track.id, *self._shifts[track.id])
                predictions[track.id] = moved_region & (
                    _grown(predictions[track.id], DRIFT) | (moved == track.id))
        cover = np.zeros(shape, np.int32)
        for prediction in predictions.values():
            cover += prediction
        bins = self._bins
        # Each track's colour model, looked up per pixel only where asked (the contested
        # pixels, the seeds' boxes): bins -> likelihood.
        likely = {t.id: t.appearance for t in live if t.appearance is not None}
        share = np.zeros(shape, np.int32)
        for track in live:
            share[predictions[track.id] & (cover == 1)] = track.id
        settled_share = np.zeros(shape, np.int32)  # contested pixels decided: not eroded
        contested = cover > 1
        if contested.any():
            decided = np.zeros(shape, bool)
            rivals = [t for t in live if t.id in likely]
            if len(rivals) > 1:
                # Scored only where contested (flat indices): a few percent of the frame.
                where = np.flatnonzero(contested)
                where_bins = bins.ravel()[where]
                scores = np.stack([np.where(predictions[t.id].ravel()[where],
                                            likely[t.id][where_bins], 0.0) for t in rivals])
                order = np.sort(scores, axis=0)
                best = np.asarray([t.id for t in rivals], np.int32)[scores.argmax(axis=0)]
                sure = (order[-1] > 0) & (order[-1] * SEED_LIKELIHOOD >= order[-2])
                decided.ravel()[where[sure]] = True
                settled_share.ravel()[where[sure]] = best[sure]
            self._judge_depth(live, predictions, settled_share, fg)
            undecided = contested & ~decided
            by_motion = undecided & (moved > 0)
            settled_share[by_motion] = moved[by_motion]
            undecided &= ~by_motion
            for track in live:
                mine = undecided & predictions[track.id]
                for other in live:
                    if other is not track and not self._in_front(track, other):
                        mine &= ~predictions[other.id]
                settled_share[mine] = track.id
        decided = (settled_share > 0) & fg  # first: the overlaps were decided already
        markers[decided] = settled_share[decided]
        # Where each track may be: its prediction, grown by how far off a prediction may be
        # (a margin, and more the faster it moves). (Counting a colour against a track only
        # where someone else may be was tried: it lost a half-hidden subject's seeds in the
        # occlusion test.)
        near = {t.id: _grown(predictions[t.id], 2 * MARGIN + int(math.ceil(
            math.hypot(*t.velocity) / 2))) & fg for t in live}
        for track in live:
            own = ((share == track.id) | (settled_share == track.id)) & fg
            seed = _shrunk(own, MARGIN)
            if not seed.any():
                seed = own
            others = [likely[t.id] for t in live
                      if t.id != track.id and t.id in likely]
            if track.id in likely and others:
                # Only within the box of its seed and where it may be: outside, both are
                # empty (the whole frame's likelihoods were most of this loop's time).
                reach = seed | near[track.id]
                if not reach.any():
                    continue
                box = bounding_box(reach)
                box_bins = bins[box]
                strongest = np.maximum.reduce([other[box_bins] for other in others])
                mine = likely[track.id][box_bins]
                boxed = seed[box] & (mine >= SEED_LIKELIHOOD * strongest)
                boxed |= near[track.id][box] & (mine * SEED_LIKELIHOOD >= strongest) & (
                    mine > 0) & (markers[box] == 0)
                seed = np.zeros(shape, bool)
                seed[box] = boxed
            markers[seed & (markers == 0)] = track.id
        return markers

    def _motion(self, live, fg, rgb, predictions) -> np.ndarray:
        """Which track each person pixel moved with (track id; 0: no one clearly): each
        track seen in the last frame is matched to this one (its pixels there, shifted by
        each displacement within ``MOTION_SEARCH`` of its velocity: the one whose colours
        differ least); a pixel is the track's whose shifted last frame explains its colour
        (the absolute difference, summed over the channels, averaged over 3x3) better by
        ``MOTION_MARGIN`` than every other track's, where that track was last frame."""
        out = np.zeros(fg.shape, np.int32)
        self._shifts = {}
        if self._previous is None or self.labels is None or len(live) < 2:
            return out
        ndi = _ndi()
        current = rgb.astype(np.int16)
        previous = self._previous.astype(np.int16)
        h, w = fg.shape
        current_flat = current.reshape(h * w, 3)  # gathered by flat index below
        residuals = []
        for track in live:
            region = self.labels == track.id
            if not region.any():
                continue
            # Its pixels in row-major order (found within its box: the whole frame's
            # nonzero was 0.4 ms a track). A quarter of them is enough to match; int32
            # halves the gather's traffic.
            top_rows, left_cols = bounding_box(region)
            ys, xs = np.nonzero(region[top_rows, left_cols])
            ys = ys[::4].astype(np.int32) + top_rows.start
            xs = xs[::4].astype(np.int32) + left_cols.start
            # Every displacement at once (one gather: 25 x a quarter of its pixels): the cost
            # of each is the mean over the pixels it keeps inside the frame of the colour
            # difference, capped at 90; displacements keeping under half are not tried.
            vy, vx = (int(round(v)) for v in track.velocity)
            steps = np.arange(-MOTION_SEARCH, MOTION_SEARCH + 1, dtype=np.int32)
            dys = np.repeat(vy + steps, len(steps))[:, None]
            dxs = np.tile(vx + steps, len(steps))[:, None]
            ty, tx = ys[None] + dys, xs[None] + dxs
            inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
            count = inside.sum(axis=1)
            # np.take: a quarter of the time of fancy indexing (25 x 3.7k pixels: 0.25 vs 1 ms)
            moved = np.take(current_flat, np.where(inside, ty * w + tx, 0), axis=0)
            channels = np.abs(moved - previous[ys, xs][None])
            diff = np.minimum(channels[..., 0] + channels[..., 1] + channels[..., 2], 90)
            diff[~inside] = 0
            with np.errstate(divide="ignore", invalid="ignore"):
                costs = diff.sum(axis=1, dtype=np.int64) / count
            costs[count < 0.5 * len(ys)] = np.inf
            if not np.isfinite(costs).any():
                continue
            k = int(np.argmin(costs))  # the first of equals, in (dy, dx) order
            best = (int(dys[k, 0]), int(dxs[k, 0]))
            support = shifted(region, *best) & fg
            residual = None  # (rows, columns, values): the box around its support
            if support.any():
                # Only around its pixels (one more each side for the 3x3 mean): a fraction
                # of the frame, per track.
                rows, cols = bounding_box(support, pad=1)
                rows, cols = slice(rows.start, min(h, rows.stop)), slice(cols.start, min(w, cols.stop))
                top, left = rows.start - best[0], cols.start - best[1]
                bottom, right = rows.stop - best[0], cols.stop - best[1]
                if top >= 0 and left >= 0 and bottom <= h and right <= w:
                    before = previous[top:bottom, left:right]
                else:  # reaching past the frame: its edge pixels repeated
                    source_y = np.clip(np.arange(rows.start, rows.stop) - best[0], 0, h - 1)
                    source_x = np.clip(np.arange(cols.start, cols.stop) - best[1], 0, w - 1)
                    before = previous[source_y[:, None], source_x[None, :]]
                # The channels added as int16 (at most 765): a sum over the last axis goes
                # through int64, 6x slower on a person's box.
                channels = np.abs(current[rows, cols] - before)
                difference = (channels[..., 0] + channels[..., 1] + channels[..., 2]).astype(
                    np.float32)
                residual = (rows, cols, np.where(support[rows, cols],
                                                 ndi.uniform_filter(difference, 3), np.inf))
            residuals.append((track.id, residual))
            self._shifts[track.id] = best
        boxes = [r for _, r in residuals if r is not None]
        if len(residuals) < 2 or not boxes:
            return out
        # Compared only within the boxes' union: elsewhere every residual is infinite.
        rows = slice(min(r.start for r, _, _ in boxes), max(r.stop for r, _, _ in boxes))
        cols = slice(min(c.start for _, c, _ in boxes), max(c.stop for _, c, _ in boxes))
        stack = np.full((len(residuals), rows.stop - rows.start, cols.stop - cols.start),
                        np.inf, np.float32)
        for layer, (_, residual) in zip(stack, residuals):
            if residual is not None:
                r, c, values = residual
                layer[r.start - rows.start:r.stop - rows.start,
                      c.start - cols.start:c.stop - cols.start] = values
        ids = np.asarray([tid for tid, _ in residuals], np.int32)
        nearest = stack.argmin(axis=0)[None]
        best = ids[nearest[0]]
        # The two smallest residuals: the least, and the least of the others.
        order = [np.take_along_axis(stack, nearest, axis=0)[0]]
        np.put_along_axis(stack, nearest, np.inf, axis=0)
        order.append(stack.min(axis=0))
        with np.errstate(invalid="ignore"):  # inf - inf where no track reaches
            clear = np.isfinite(order[0]) & (order[1] - order[0] >= MOTION_MARGIN) & fg[rows, cols]
        # Where only one track's motion reaches, not where someone else's old shape says they
        # may be coming back out from behind (that part was hidden last frame, so its motion
        # cannot reach it: it lost a re-emerging head to the one in front).
        # The subject, besides, claims by its motion alone only near its own old shape (a
        # frame's move and twice the margin): a bystander's white shoe moving less than its
        # width kept explaining itself as the subject's, frame after frame. (Bounding every
        # track so lost a half-hidden bystander whose prediction had drifted, to the subject.)
        lone = ~np.isfinite(order[1])
        for track in live:
            if track.id not in predictions:
                continue
            prediction = predictions[track.id]
            clear &= ~(lone & prediction[rows, cols] & (best != track.id))
            if track.subject:
                reach = 4 * MARGIN + int(math.ceil(math.hypot(*track.velocity)))
                clear &= ~(lone & (best == track.id) & ~_grown(prediction, reach)[rows, cols])
        out[rows, cols][clear] = best[clear]
        return out

    def _judge_depth(self, live, predictions, by_colour, fg) -> None:
        """Who is in front, for each pair of tracks whose predictions overlap: the one whose
        colours (decisively its own) show in the overlap more than ``DEPTH_MARGIN`` times
        as often as the other's, once ``DEPTH_EVIDENCE`` of the overlap shows either. Kept
        until the evidence says otherwise."""
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                both = predictions[a.id] & predictions[b.id] & fg
                overlap = int(both.sum())
                if not overlap:
                    continue
                shown = by_colour[both]
                va, vb = int((shown == a.id).sum()), int((shown == b.id).sum())
                if va + vb >= max(8, DEPTH_EVIDENCE * overlap) and \
                        max(va, vb) >= DEPTH_MARGIN * min(va, vb):
                    self.depth[(min(a.id, b.id), max(a.id, b.id))] = a.id if va > vb else b.id

    def _in_front(self, track: Track, other: Track) -> bool:
        """``track`` in front of ``other``: by the depth judged from colours, else the one
        seen whole is in front of one partly hidden."""
        front = self.depth.get((min(track.id, other.id), max(track.id, other.id)))
        if front is not None:
            return front == track.id
        return track.hidden == 0 and other.hidden > 0

    def _merged_groups(self, labels: Optional[np.ndarray]) -> dict[int, int]:
        """track id -> the component it shared with another track in ``labels`` (else absent)."""
        if labels is None:
            return {}
        groups: dict[int, set] = {}
        for tid, c in self._touching_pairs(labels):
            groups.setdefault(c, set()).add(tid)
        return {tid: c for c, tids in groups.items() if len(tids) > 1 for tid in tids}

    def _touching_pairs(self, labels: np.ndarray) -> list[tuple[int, int]]:
        """``(track id, component)`` for each component of ``labels > 0`` holding that
        track's pixels, ascending by id, then component. Remembered for ``labels`` until it
        is asked about other labels or ``_relabelled`` says they changed."""
        if self._pairs is not None and self._pairs[0] is labels:
            return self._pairs[1]
        inside = labels > 0
        components, _, _ = self._components(inside)
        ids, parts = labels[inside].astype(np.int64), components[inside]
        width = int(parts.max()) + 1 if parts.size else 1
        pairs = [(int(key) // width, int(key) % width)
                 for key in np.flatnonzero(np.bincount(ids * width + parts))]
        self._pairs = (labels, pairs)
        return pairs

    def _relabelled(self) -> None:
        """The labels changed in place (a reclaimed track's id): pairs asked afresh."""
        self._pairs = None

    def _new_people(self, labels, fg, edges, pha) -> bool:
        """Components no seed reached: new people (a lost subject re-found among them)."""
        unclaimed = fg & (labels == 0)
        if not unclaimed.any():
            return False
        people = self._segment(fg, edges, only=unclaimed)
        return self._assign(people, labels, pha)

    def _assign(self, people: list[np.ndarray], labels, pha) -> bool:
        """New people -> tracks: lost subjects re-found by appearance, the rest bystanders."""
        refound = False
        histograms = [self._histogram(p & (pha > CONFIDENT)) for p in people]
        taken: set[int] = set()
        lost = [t for t in self.tracks.values() if t.subject and not (labels == t.id).any()]
        bystanders = [t for t in self.tracks.values() if not t.subject]
        for track in lost:
            best, best_distance = None, REFIND_DISTANCE
            for i, histogram in enumerate(histograms):
                if i in taken:
                    continue
                distance = bhattacharyya(histogram, track.appearance)
                others = min((bhattacharyya(histogram, b.appearance) for b in bystanders),
                             default=1.0)
                if distance < best_distance and distance < others:
                    best, best_distance = i, distance
            if best is not None:
                taken.add(best)
                person = people[best]
                at = _centroid(person)
                track.template, track.template_at, track.position = person.copy(), at, at
                track.velocity, track.hidden, track.whole_before = (0.0, 0.0), 0, False
                track.area = float(person.sum())
                labels[person & (labels == 0)] = track.id
                refound = True
        for i, person in enumerate(people):
            if i not in taken:
                track = self._new_track(person, pha, subject=False)
                labels[person & (labels == 0)] = track.id
        return refound

    def _after_cut(self, fg, edges, pha) -> tuple[np.ndarray, bool]:
        """A new shot: where people were means nothing; the subject by appearance only."""
        for track in list(self.tracks.values()):
            if track.subject:
                track.visible = 0
                track.hidden = COAST_FRAMES + 1  # no prediction until seen again
            else:
                del self.tracks[track.id]
        labels = np.zeros(fg.shape, np.int32)
        refound = self._assign(self._segment(fg, edges), labels, pha)
        labels = self._attach_strays(labels, fg)
        self._update(labels, fg, pha)
        return labels, refound

    def _attach_strays(self, labels: np.ndarray, fg: np.ndarray) -> np.ndarray:
        """Unlabelled person pixels near someone (within ``ATTACH``) join them; the rest
        are nobody's (-1: kept out of everyone's territory)."""
        stray = fg & (labels == 0)
        if not stray.any():
            return labels
        if not (labels > 0).any():
            labels[stray] = -1
            return labels
        limit = ATTACH * max(fg.shape)
        # Within the strays' box grown by the limit: every person pixel within the limit
        # of a stray is inside it, so each stray's nearest one within the limit is the
        # whole frame's (the frame's distance transform was 6 ms at 512x288).
        box = bounding_box(stray, pad=int(math.ceil(limit)) + 1)
        crop = labels[box]
        components, count, _ = self._components(stray[box])
        if not (crop > 0).any():
            crop[components > 0] = -1
            return labels
        distance, (iy, ix) = _ndi().distance_transform_edt(crop <= 0, return_indices=True)
        for index in range(1, count + 1):
            piece = components == index
            nearest = np.argmin(np.where(piece, distance, np.inf))
            if distance.flat[nearest] <= limit:
                crop[piece] = crop[iy.flat[nearest], ix.flat[nearest]]
            else:
                crop[piece] = -1
        return labels

    def _update(self, labels, fg, pha) -> None:
        """Each track after this frame. *Whole*: seen at its usual area (within
        ``WHOLE``); less is partly hidden (something is in front of it), more has probably
        taken someone coming out from behind it. *Settled*: it and everyone it touches are
        whole (or it stands alone): only then is its region its shape (template), its
        centroid its position and the step its velocity; while it touches someone, only
        after ``SETTLE_FRAMES`` (people passing each other keep the shapes they had apart).
        Otherwise its template is kept and it moves on at its velocity."""
        touching: dict[int, set] = {track.id: set() for track in self.tracks.values()}
        for tid, component in self._touching_pairs(labels):
            touching.setdefault(tid, set()).add(component)
        regions = {}
        for track in self.tracks.values():
            region = labels == track.id
            regions[track.id] = region
            track.visible = int(region.sum())
        whole = {}
        for track in self.tracks.values():
            ratio = track.visible / track.area if track.area else 0.0
            alone = not any(touching[track.id] & touching[other.id]
                            for other in self.tracks.values() if other is not track)
            # Alone, whatever it shows is all of it (coming into the frame, walking away).
            whole[track.id] = track.visible > 0 and (alone or abs(ratio - 1) <= WHOLE)
            if track.visible:
                track.last_seen = self.frame
                # Alone, what it shows is its area now (one coming into the frame grows
                # fast: an average would lag, and it would not look whole when it first
                # touches someone).
                # Partly hidden, it keeps its usual area: a hidden subject's area shrinking
                # with what shows made half of it look whole, and that half its template.
                # (A lasting growth becomes usual: someone stepping nearer while touching
                # another, never whole again, coasted out and lost its pixels.)
                if alone:
                    track.area = float(track.visible)
                elif whole[track.id] or track.visible > track.area:
                    track.area += AREA_RATE * (track.visible - track.area)
        for track in list(self.tracks.values()):
            region = regions[track.id]
            neighbours = [other for other in self.tracks.values() if other is not track
                          and touching[track.id] & touching[other.id]]
            track.merged = track.merged + 1 if neighbours else 0
            # Touching someone, its region is only as good as the split between them: the
            # shape is taken again once they have stood together a while, all whole.
            settled = whole[track.id] and (not neighbours or (
                track.merged >= SETTLE_FRAMES and all(whole[o.id] for o in neighbours)))
            track.hidden = 0 if whole[track.id] else track.hidden + 1
            if settled:
                at = _centroid(region)
                if track.whole_before:  # its position is where it was seen a frame ago
                    step = (at[0] - track.position[0], at[1] - track.position[1])
                    track.velocity = tuple(
                        VELOCITY_SMOOTHING * s + (1 - VELOCITY_SMOOTHING) * v
                        for s, v in zip(step, track.velocity))
                track.template, track.template_at, track.position = region, at, at
                if not neighbours:  # alone: its colours are its own
                    histogram = self._histogram(region & (pha > CONFIDENT))
                    if histogram is not None:
                        track.appearance = histogram if track.appearance is None else (
                            (1 - APPEARANCE_RATE) * track.appearance
                            + APPEARANCE_RATE * histogram)
            else:
                track.position = (track.position[0] + track.velocity[0],
                                  track.position[1] + track.velocity[1])
            track.whole_before = settled
            if not track.subject and self.frame - track.last_seen > FORGET_FRAMES:
                del self.tracks[track.id]

    def _unswap(self, labels, merged_before: dict[int, int], pha) -> None:
        """Two tracks merged in the frame before and apart now, each region's colours
        matching the other track's model better (by ``SWAP_MARGIN``): the predictions, and
        so the watershed, followed the wrong person through the merge. The two swap who
        they are (subject or not, and appearance); the labels and each track's motion stay
        with the region they follow, so the subject is kept where its colours are."""
        if not merged_before:
            return
        now = self._merged_groups(labels)
        apart = [tid for tid in merged_before if tid not in now and tid in self.tracks
                 and self.tracks[tid].visible]
        for i, a in enumerate(apart):
            for b in apart[i + 1:]:
                if merged_before[a] != merged_before[b]:
                    continue
                ta, tb = self.tracks[a], self.tracks[b]
                if ta.subject == tb.subject:
                    continue
                ha = self._histogram((labels == a) & (pha > CONFIDENT))
                hb = self._histogram((labels == b) & (pha > CONFIDENT))
                same = bhattacharyya(ha, ta.appearance) + bhattacharyya(hb, tb.appearance)
                crossed = bhattacharyya(ha, tb.appearance) + bhattacharyya(hb, ta.appearance)
                if crossed + SWAP_MARGIN < same:
                    ta.subject, tb.subject = tb.subject, ta.subject
                    ta.appearance, tb.appearance = tb.appearance, ta.appearance

    # ---- the keep mask -------------------------------------------------------------------
    def _keep(self, labels: np.ndarray, fg: np.ndarray) -> np.ndarray:
        subject_ids = [t.id for t in self.tracks.values() if t.subject]
        if not subject_ids or not (labels != 0).any():
            return np.zeros(labels.shape, bool)
        ndi = _ndi()
        iy, ix = ndi.distance_transform_edt(labels == 0, return_distances=False,
                                            return_indices=True)
        territory = labels[iy, ix]
        keep = np.isin(territory, subject_ids)
        # One pixel more, so the upsample takes the subject's edge whole, except into
        # another person: where people touch, everyone else's alpha stays exactly zero and
        # the subject's edge gives up half a low-resolution pixel there.
        someone_else = (labels != 0) & ~np.isin(labels, subject_ids)
        return keep | (_grown(keep, 1) & ~someone_else)  # 8-connected, by its box


# -- the device side ----------------------------------------------------------------------------
class PendingKeep:
    """One frame's keep mask on its way (``SubjectSelector.submit``): the tracker's step
    (a future) and the coefficients it will be applied to."""

    def __init__(self, future, coeff_a, coeff_b):
        self.future, self.coeff_a, self.coeff_b = future, coeff_a, coeff_b


class SubjectSelector:
    """Applies the subject's keep mask to a frame's coefficients, in place.

    ``selector(coeff_a, coeff_b, src_sm, cut=False)``: ``coeff_a``/``coeff_b`` ``[4, h, w]``
    (any device, dtype, memory format), ``src_sm`` ``[3, h', w']`` in [0, 1]. The alpha
    channel's coefficients are multiplied by the keep mask, so the tail's alpha is zero
    outside the subject's territory and untouched inside. Coefficients at full size (a
    forward-only network) are analysed at ``src_sm``'s size and the mask upsampled.

    ``submit(...)`` then ``apply(pending)`` do the same in two halves: ``submit`` copies the
    frame's low-resolution alpha and colours to the host on the calling thread and hands the
    tracker's step to the selector's own thread (steps run one at a time, in the order
    submitted); ``apply`` waits for it and multiplies. The runner submits a chunk right after
    the network and applies it after the next chunk's network call, so the tracker (19-39 ms
    of one core a frame at 512x288) runs beside the network instead of after it.
    ``close()`` ends that thread.
    """

    def __init__(self, spec: SubjectSpec, input_size: tuple[int, int]):
        self.spec = spec
        self.tracker = SubjectTracker(spec, input_size)
        self.keep = None  # the last keep mask (torch, bool, the coefficients' size)
        self._worker = None  # the tracker's thread, started by the first submit()

    def low_resolution_alpha(self, coeff_a, coeff_b, src_sm):
        """``[h, w]`` float alpha at ``src_sm``'s size: the refiner's output there."""
        import torch.nn.functional as F

        if coeff_b.shape[-2:] == src_sm.shape[-2:]:
            pha = coeff_a[3].float() * src_sm.float().mean(0) + coeff_b[3].float()
        else:  # full-size coefficients (coeff_a = 0): the alpha itself, averaged down
            pha = F.interpolate(coeff_b[3].float()[None, None], size=tuple(src_sm.shape[-2:]),
                                mode="area")[0, 0]
        return pha.clamp_(0, 1)

    def _packed(self, coeff_a, coeff_b, src_sm) -> np.ndarray:
        """``[4, h, w]`` uint8 on the host: the alpha and colours (one copy: on CUDA, a
        synchronisation)."""
        import torch

        pha = self.low_resolution_alpha(coeff_a, coeff_b, src_sm)
        return torch.cat([pha[None], src_sm.float().clamp(0, 1)]).mul_(255).round_() \
            .to(torch.uint8).cpu().numpy()

    def _step(self, packed: np.ndarray, cut: bool) -> np.ndarray:
        return self.tracker.step(packed[0].astype(np.float32) / 255.0,
                                 np.ascontiguousarray(packed[1:].transpose(1, 2, 0)), cut)

    def _apply(self, keep: np.ndarray, coeff_a, coeff_b) -> None:
        import torch
        import torch.nn.functional as F

        mask = torch.from_numpy(keep).to(coeff_b.device, non_blocking=True)
        if mask.shape != coeff_b.shape[-2:]:
            mask = F.interpolate(mask[None, None].float(), size=tuple(coeff_b.shape[-2:]),
                                 mode="nearest")[0, 0] > 0
        self.keep = mask
        scale = mask.to(coeff_b.dtype)
        coeff_a[3].mul_(scale)
        coeff_b[3].mul_(scale)

    def __call__(self, coeff_a, coeff_b, src_sm, cut: bool = False) -> None:
        """The whole of it on this thread."""
        self._apply(self._step(self._packed(coeff_a, coeff_b, src_sm), cut), coeff_a, coeff_b)

    def submit(self, coeff_a, coeff_b, src_sm, cut: bool = False) -> PendingKeep:
        """The copy to the host now; the tracker's step on the selector's thread."""
        packed = self._packed(coeff_a, coeff_b, src_sm)
        if self._worker is None:
            from concurrent.futures import ThreadPoolExecutor

            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nvpipe-subject")
        return PendingKeep(self._worker.submit(self._step, packed, cut), coeff_a, coeff_b)

    def apply(self, pending: PendingKeep) -> None:
        """Waits for ``pending``'s step (its error, if it failed) and applies its mask."""
        self._apply(pending.future.result(), pending.coeff_a, pending.coeff_b)

    def close(self) -> None:
        """Ends the tracker's thread (steps not started are dropped)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker = None

    def describe(self) -> str:
        return self.tracker.describe()


__all__ = ["SubjectSpec", "SubjectSelector", "PendingKeep", "SubjectTracker", "FrameReport",
           "parse_subject", "subject_spec", "split_people", "find_heads", "bhattacharyya",
           "colour_histogram", "REFIND_DISTANCE", "FOREGROUND"]
