"""Synthetic scenes for the subject tracker's tests: people as coloured figures (a head and a
body) moving over a grey background, drawn in depth order, with the network's kind of
soft-edged alpha and, for every pixel, which person it shows (the truth the tests score
against)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEIGHT, WIDTH = 120, 200   # the scene's units (figures are placed in these)
SCALE = 2                  # pixels per unit: frames are 240 x 400, people ~70 pixels wide
SKIN = (224, 172, 140)
BACKGROUND = (128, 128, 128)


@dataclass
class Figure:
    """A person at ``x`` (centre column) with the top of the head at ``top``; ``depth``:
    larger is nearer (drawn over the others); ``colour``: the clothes."""

    x: float
    top: float
    colour: tuple
    depth: int = 0
    head: float = 9.0  # radius

    def coverage(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(covered, is_head) at sample points."""
        r = self.head
        cy = self.top + r
        head = (ys - cy) ** 2 + (xs - self.x) ** 2 <= r * r
        neck = (np.abs(xs - self.x) <= 0.45 * r) & (ys >= cy) & (ys <= cy + 1.4 * r)
        shoulders = self.top + 2.2 * r
        half = 1.9 * r
        body = (np.abs(xs - self.x) <= half) & (ys >= shoulders + 0.6 * r)
        corner = (ys >= shoulders) & (ys < shoulders + 0.6 * r) & (
            np.abs(xs - self.x) <= half - (shoulders + 0.6 * r - ys) * 1.2)
        return head | neck | body | corner, head | neck


def pixel(point: tuple) -> tuple:
    """A point in scene units -> the frame's pixels."""
    return (point[0] * SCALE + SCALE / 2 - 0.5, point[1] * SCALE + SCALE / 2 - 0.5)


def render(figures: list[Figure], *, seed: int = 0):
    """``(pha float32 (h, w), rgb uint8 (h, w, 3), owner int (h, w))`` at ``SCALE`` pixels a
    unit: owner is the index of the front figure a pixel shows (-1: background), over 2x2
    supersampling (soft edges)."""
    rng = np.random.default_rng(seed)
    ss = 2
    height, width = HEIGHT * SCALE, WIDTH * SCALE
    ys, xs = np.mgrid[0:height * ss, 0:width * ss].astype(np.float32)
    ys, xs = ((ys + 0.5) / ss - 0.5) / SCALE, ((xs + 0.5) / ss - 0.5) / SCALE
    owner = np.full(ys.shape, -1, np.int32)
    colour = np.empty((*ys.shape, 3), np.float32)
    colour[:] = BACKGROUND
    for index in sorted(range(len(figures)), key=lambda i: figures[i].depth):
        covered, head = figures[index].coverage(ys, xs)
        owner[covered] = index
        colour[covered & ~head] = figures[index].colour
        colour[covered & head] = SKIN
    fine_alpha = (owner >= 0).astype(np.float32)
    pha = fine_alpha.reshape(height, ss, width, ss).mean(axis=(1, 3))
    rgb = colour.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    # The pixel's owner: the figure covering most of its samples.
    counts = np.stack([(owner == i).reshape(height, ss, width, ss).sum(axis=(1, 3))
                       for i in range(len(figures))]) if figures else np.zeros((0, height, width))
    coarse = np.where(pha > 0, counts.argmax(axis=0), -1) if figures else \
        np.full((height, width), -1)
    return pha.astype(np.float32), rgb, coarse.astype(np.int32)


def sides(owner: np.ndarray, subject: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel to the nearest person's side (the truth's territories):
    (subject's side, the others' side) as bool masks."""
    from scipy import ndimage

    if (owner < 0).all():
        empty = np.zeros(owner.shape, bool)
        return empty, empty
    iy, ix = ndimage.distance_transform_edt(owner < 0, return_distances=False,
                                            return_indices=True)
    nearest = owner[iy, ix]
    mine = np.isin(nearest, list(subject))
    return mine, ~mine


def score(pha: np.ndarray, keep: np.ndarray, owner: np.ndarray, subject: set[int],
          upscale: int = 4):
    """``(others, retained)``: the alpha mass left on the others' side as a share of the
    subject's (plain) mass, and the share of the subject's plain mass kept: the issue's
    measure (at most 0.02, at least 0.95). Scored on the output: the low-resolution alpha
    (plain, and times the keep mask) upsampled ``upscale`` times bilinearly, as the tail
    does, against the truth's sides upsampled by repetition."""
    import torch
    import torch.nn.functional as F

    def up(values):
        return F.interpolate(torch.from_numpy(np.ascontiguousarray(values, np.float32))[None, None],
                             scale_factor=upscale, mode="bilinear", align_corners=False)[0, 0].numpy()

    mine, theirs = sides(owner, subject)
    mine = np.kron(mine, np.ones((upscale, upscale), bool))
    theirs = np.kron(theirs, np.ones((upscale, upscale), bool))
    plain_alpha, kept = up(pha), up(pha * keep)
    plain = float((plain_alpha * mine).sum())
    if plain == 0:
        return float(kept.sum()), 1.0
    return float((kept * theirs).sum()) / plain, float((kept * mine).sum()) / plain
