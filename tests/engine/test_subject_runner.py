"""The runner with a subject: one chunk is held between the network and the tail while its
tracker runs on the selector's thread (nvpipe.engine.runner's main loop). The frames that
chunk holds must stay what the network saw until the tail has read them."""

from __future__ import annotations

import time

import pytest
import torch

from conftest import count_frames, footage_clip


@pytest.fixture(scope="module")
def four16(tmp_path_factory):
    return footage_clip(tmp_path_factory, "four_people_1080p.mp4", "four16.mp4", frames=16,
                        size=(320, 180), timed=True)


@pytest.mark.parametrize("chunk", [1, 4])
def test_held_frames_are_not_reused_before_the_tail(four16, tmp_path, onnx_weights, monkeypatch,
                                                   chunk):
    """A slow network (100 ms a call) lets the decode thread run as far ahead as its queue
    allows; every frame's full-size buffer must reach the tail as the network saw it. (With
    the converter's ring sized for one held chunk, chunks of 4 had 5 of 16 frames
    overwritten.)"""
    from nvpipe.engine import runner
    from nvpipe.engine.matting import MattingStage
    from nvpipe.job import Job, OutputSpec

    seen, changed = {}, []
    matte, compose, network = runner.Pipeline.matte, runner.Pipeline.compose, MattingStage.__call__

    def noting_matte(self, frames):
        for frame in frames:
            seen[frame.index] = frame.src.clone()
        return matte(self, frames)

    def checking_compose(self, coeff_a, coeff_b, frame):
        if not torch.equal(frame.src, seen[frame.index]):
            changed.append(frame.index)
        return compose(self, coeff_a, coeff_b, frame)

    def slow_network(self, *args, **kwargs):
        time.sleep(0.1)
        return network(self, *args, **kwargs)

    monkeypatch.setattr(runner.Pipeline, "matte", noting_matte)
    monkeypatch.setattr(runner.Pipeline, "compose", checking_compose)
    monkeypatch.setattr(MattingStage, "__call__", slow_network)
    out = tmp_path / "out.mp4"
    # ratio 0.5: the tail reads the full-size frame (at ratio 1 it does not)
    result = runner.run(Job(input=str(four16), outputs=[OutputSpec(str(out))], device="cpu",
                            subject="main", chunk=chunk, ratio=0.5, weights=str(onnx_weights)))
    assert changed == []
    assert result.frames == 16 and count_frames(out) == 16
    assert len(seen) == 16
