"""--background blur[:RADIUS]: the input itself, blurred, behind the subject."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nvpipe.engine.blur import blur_frame, gaussian_taps


def _full_resolution_gaussian(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """The reference: a plain 2-D Gaussian at full resolution, edges reflected."""
    taps = gaussian_taps(sigma)
    kernel = (taps[:, None] * taps[None, :])[None, None].expand(3, 1, -1, -1)
    half = taps.numel() // 2
    padded = F.pad(image[None], (half, half, half, half), mode="reflect")
    return F.conv2d(padded, kernel, groups=3)[0]


@pytest.mark.parametrize("radius", [2.0, 5.0, 12.0, 20.0])
def test_blur_is_a_gaussian_of_the_radius(radius):
    """The reduced-resolution blur stays within 2/255 of a full-resolution Gaussian away
    from the edges (a real picture's content: smooth areas and edges)."""
    generator = torch.Generator().manual_seed(1)
    coarse = torch.rand(1, 3, 12, 9, generator=generator)
    image = F.interpolate(coarse, size=(240, 180), mode="nearest")[0]  # hard edges
    image = image + 0.05 * torch.rand(image.shape, generator=generator)
    image = image.clamp(0, 1)
    ours = blur_frame(image, radius)
    reference = _full_resolution_gaussian(image, radius)
    margin = int(2 * radius)
    inner = (slice(None), slice(margin, -margin), slice(margin, -margin))
    assert ours.shape == image.shape and ours.dtype == image.dtype
    assert (ours[inner] - reference[inner]).abs().max() < 1 / 255
    assert (ours[inner] - reference[inner]).abs().mean() < 0.25 / 255
    # Blurred: much less detail than the input.
    assert ours.diff(dim=2).abs().mean() < image.diff(dim=2).abs().mean() / 2


def test_blur_keeps_dtype_and_batch():
    image = torch.rand(2, 3, 40, 30)
    out = blur_frame(image.half(), 6.0)
    assert out.dtype == torch.float16 and out.shape == (2, 3, 40, 30)
    torch.testing.assert_close(out[1].float(), blur_frame(image[1], 6.0), atol=2e-3, rtol=0)


def _pipeline_frames(clip):
    """The input frames as the pipeline sees them (nvpipe's decoder and converter)."""
    from nvpipe.engine.convert import Converter
    from nvpipe.sources import open_source

    with open_source(str(clip)) as source:
        converter = Converter(source.info, ratio=1.0, device="cpu", dtype=torch.float32)
        return [converter(frame)[0].clone() for frame in source]


def _pngs(folder):
    from PIL import Image

    return [np.asarray(Image.open(p), dtype=np.float32) / 255 for p in sorted(folder.iterdir())]


def test_composite_background_is_the_blurred_input(small_clip, weights_env, tmp_path):
    """Where the matte is clear, the composite is the input blurred (within 1.5/255: the
    8-bit store), frame for frame; where the person is, it is not."""
    from nvpipe import Job, OutputSpec, run

    radius = 6.0
    composite, alpha = tmp_path / "com", tmp_path / "pha"
    run(Job(input=str(small_clip), ratio=0.5, background=f"blur:{radius:g}",
            outputs=[OutputSpec(str(composite) + "/", kind="composite"),
                     OutputSpec(str(alpha) + "/", kind="alpha")]))
    frames = _pipeline_frames(small_clip)
    composites, alphas = _pngs(composite), _pngs(alpha)
    assert len(composites) == len(alphas) == len(frames) == 8
    for src, com, pha in zip(frames, composites, alphas):
        blurred = blur_frame(src, radius).permute(1, 2, 0).numpy()
        clear = pha < 0.5 / 255
        assert clear.mean() > 0.3  # most of the frame is background
        assert np.abs(com[clear] - blurred[clear]).max() < 1.5 / 255
        person = pha > 254.5 / 255
        assert np.abs(com[person] - blurred[person]).mean() > 5 / 255  # the subject is sharp
