"""Composer's background upload when the frames live on another device than the background.

The background sources hand out CPU tensors. On CUDA a picture background (the same tensor
every frame) must be copied to the device once, not once per frame. The device here is
PyTorch's "meta" device: only where a tensor lives and which object it is are checked, the
copy itself is torch's.
"""

import torch

from nvpipe.engine.compose import ComposeTarget, Composer


class _Frames:
    """A background whose frame i is ``frames[schedule[i]]`` (each an owned CPU tensor)."""

    color = None

    def __init__(self, frames, schedule):
        self.frames, self.schedule = frames, schedule

    def frame(self, index):
        return self.frames[self.schedule[index]]


def _composer(background):
    return Composer([ComposeTarget("out.mp4", "composite", "rgb24")], background)


def test_a_picture_is_uploaded_once():
    picture = torch.randint(0, 256, (3, 6, 8), dtype=torch.uint8)
    composer = _composer(_Frames([picture], [0] * 5))
    src = torch.empty(3, 6, 8, device="meta")
    uploaded = [composer._background_for(i, src) for i in range(5)]
    assert all(b.device.type == "meta" and b.shape == picture.shape for b in uploaded)
    assert all(b is uploaded[0] for b in uploaded)


def test_each_new_video_frame_is_uploaded_and_repeats_are_not():
    frames = [torch.randint(0, 256, (3, 6, 8), dtype=torch.uint8) for _ in range(3)]
    schedule = [0, 0, 1, 2, 2, 0]  # a repeated frame, then back to the first (a loop)
    composer = _composer(_Frames(frames, schedule))
    src = torch.empty(3, 6, 8, device="meta")
    uploaded = [composer._background_for(i, src) for i in range(len(schedule))]
    assert uploaded[0] is uploaded[1] and uploaded[3] is uploaded[4]
    distinct = {id(b) for b in uploaded}
    assert len(distinct) == 4  # frame 0, 1, 2, then frame 0 again after the others


def test_same_device_backgrounds_are_used_as_they_are():
    picture = torch.randint(0, 256, (3, 6, 8), dtype=torch.uint8)
    composer = _composer(_Frames([picture], [0, 0]))
    src = torch.rand(3, 6, 8)
    assert composer._background_for(0, src) is picture
    assert composer._background_for(1, src) is picture
