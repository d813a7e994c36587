"""RVM's command line and RVM's hand-written loop, unchanged but for the import.

- ``python -m nvpipe.inference`` with the flags of RVM's ``documentation/inference.md``:
  the outputs decoded and counted (videos), listed and counted (PNG sequences, named
  ``0000.png`` as RVM names them);
- ``nvpipe run`` given RVM's flags: one line pointing at ``python -m nvpipe.inference``;
- RVM's documented loop (``VideoReader``/``VideoWriter`` from ``inference_utils``) run as
  a script with ``from inference_utils import`` -> ``from nvpipe.inference_utils import``
  and ``from model import`` -> ``from rvm import``;
- the classes of ``nvpipe.inference_utils`` one by one.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED, count_frames, footage_clip

REPO = Path(__file__).resolve().parents[2]
FRAMES = 6
PTH = SHARED / "weights" / "rvm_mobilenetv3_bnidentity.pth"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return footage_clip(tmp_path_factory, "person_fullbody_360x640.mp4", "input.mp4",
                        frames=FRAMES, size=(144, 256), timed=True)


@pytest.fixture
def pth():
    if not PTH.exists():
        pytest.skip(f"{PTH} is absent")
    return PTH


def _python(*args, cwd, env=None, timeout=600):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


# -- RVM's command line ------------------------------------------------------------------------
def test_rvm_command_line_as_documented_video(clip, pth, tmp_path):
    """RVM's inference.md command, flag for flag (the paths ours, the device the CPU)."""
    done = _python("-m", "nvpipe.inference",
                   "--variant", "mobilenetv3",
                   "--checkpoint", pth,
                   "--device", "cpu",
                   "--input-source", clip,
                   "--downsample-ratio", "0.5",
                   "--output-type", "video",
                   "--output-composition", "composition.mp4",
                   "--output-alpha", "alpha.mp4",
                   "--output-foreground", "foreground.mp4",
                   "--output-video-mbps", "4",
                   "--seq-chunk", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("composition.mp4", "alpha.mp4", "foreground.mp4"):
        assert count_frames(tmp_path / name) == FRAMES, name
    import av

    with av.open(str(tmp_path / "composition.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"  # RVM writes H.264
        frame = next(container.decode(stream)).to_ndarray(format="rgb24").astype(int)
    # RVM's green (120, 255, 155) in the corners, away from the person.
    assert np.abs(frame[:8, :8].reshape(-1, 3).mean(0) - (120, 255, 155)).max() < 12


def test_rvm_command_line_png_sequence_named_as_rvm(clip, pth, tmp_path):
    done = _python("-m", "nvpipe.inference", "--variant", "mobilenetv3", "--checkpoint", pth,
                   "--device", "cpu", "--input-source", clip, "--output-type", "png_sequence",
                   "--output-composition", "com", "--output-alpha", "pha",
                   "--disable-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    from PIL import Image

    expected = [f"{i:04d}.png" for i in range(FRAMES)]
    assert sorted(os.listdir(tmp_path / "com")) == expected
    assert sorted(os.listdir(tmp_path / "pha")) == expected
    assert Image.open(tmp_path / "com" / "0000.png").mode == "RGBA"
    assert Image.open(tmp_path / "pha" / "0000.png").mode == "L"


def test_rvm_command_line_checks_as_rvm(clip, tmp_path):
    no_output = _python("-m", "nvpipe.inference", "--input-source", clip, "--output-type",
                        "video", cwd=tmp_path, timeout=120)
    assert no_output.returncode == 2 and "at least one of --output-composition" in no_output.stderr
    missing = _python("-m", "nvpipe.inference", "--output-type", "video", cwd=tmp_path,
                      timeout=120)
    assert missing.returncode == 2 and "--input-source" in missing.stderr


def test_nvpipe_run_points_rvm_flags_at_nvpipe_inference(tmp_path):
    """argparse used to take two of RVM's values as IN and OUT; now one line says where
    RVM's command line goes, and nothing is written."""
    done = subprocess.run([sys.executable, "-m", "nvpipe", "run", "--variant", "mobilenetv3",
                           "--checkpoint", "rvm.pth", "--device", "cpu", "--input-source",
                           "in.mp4", "--output-type", "video", "--output-composition", "c.mp4"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "python -m nvpipe.inference" in lines[0] and "--input-source" in lines[0]
    assert list(tmp_path.iterdir()) == []


# -- RVM's hand-written loop -------------------------------------------------------------------
# documentation/inference.md, "To inference on video, here is a complete example", with the
# model loading above it; word for word but for the paths (formatted in).
RVM_LOOP = """
import torch
from model import MattingNetwork

model = MattingNetwork(variant='mobilenetv3').eval().cuda() # Or variant="resnet50"
model.load_state_dict(torch.load({weights!r}))

from torch.utils.data import DataLoader
from torchvision.transforms import ToTensor
from inference_utils import VideoReader, VideoWriter

reader = VideoReader({clip!r}, transform=ToTensor())
writer = VideoWriter('output.mp4', frame_rate=30)

bgr = torch.tensor([.47, 1, .6]).view(3, 1, 1).cuda()  # Green background.
rec = [None] * 4                                       # Initial recurrent states.

with torch.no_grad():
    for src in DataLoader(reader):
        fgr, pha, *rec = model(src.cuda(), *rec, downsample_ratio=0.25)  # Cycle the recurrent states.
        writer.write(fgr * pha + bgr * (1 - pha))
"""

IMPORT_CHANGES = {"from model import MattingNetwork": "from rvm import MattingNetwork",
                  "from inference_utils import": "from nvpipe.inference_utils import"}

# torchvision's ToTensor, where torchvision cannot be imported (its PyPI wheels need the CUDA
# build of torch; this machine has the CPU build): the loop's own import line is kept.
TORCHVISION_STAND_IN = {
    "torchvision/__init__.py": "",
    "torchvision/transforms/__init__.py": (
        "import numpy as np\nimport torch\n\n\nclass ToTensor:\n"
        "    def __call__(self, picture):\n"
        "        array = np.asarray(picture, dtype=np.uint8)\n"
        "        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)\n"),
}


def _torchvision_path(tmp_path: Path) -> str:
    probe = subprocess.run([sys.executable, "-c", "import torchvision.transforms"],
                           capture_output=True, timeout=120)
    if probe.returncode == 0:
        return ""
    for name, text in TORCHVISION_STAND_IN.items():
        (tmp_path / "stand_in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "stand_in" / name).write_text(text)
    return str(tmp_path / "stand_in")


def test_rvm_documented_loop_with_only_the_imports_changed(clip, pth, tmp_path):
    script = RVM_LOOP.format(weights=str(pth), clip=str(clip))
    changed = script
    for old, new in IMPORT_CHANGES.items():
        changed = changed.replace(old, new)
    differing = [a for a, b in zip(script.splitlines(), changed.splitlines()) if a != b]
    assert len(differing) == 2, differing  # the two import lines, nothing else
    if not torch.cuda.is_available():  # the loop's .cuda() calls, on a machine without a GPU
        changed = changed.replace(".cuda()", ".cpu()")
    (tmp_path / "loop.py").write_text(changed)
    stand_in = _torchvision_path(tmp_path)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (stand_in, os.environ["PYTHONPATH"]) if p)}
    done = _python(tmp_path / "loop.py", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    # The loop never closes its writer: the file is completed when the writer goes.
    assert count_frames(tmp_path / "output.mp4") == FRAMES
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    import av

    with av.open(str(tmp_path / "output.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (144, 256)
        assert stream.average_rate == 30
        frame = next(container.decode(stream)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(frame[:8, :8].reshape(-1, 3).mean(0) - (120, 255, 153)).max() < 12


# -- the classes ---------------------------------------------------------------------------------
def test_video_reader_is_a_dataset_of_frames(clip):
    from PIL import Image

    from nvpipe.inference_utils import VideoReader

    reader = VideoReader(str(clip))
    assert len(reader) == FRAMES and reader.frame_rate == 24
    frames = [reader[i] for i in range(len(reader))]
    assert all(isinstance(f, Image.Image) and f.size == (144, 256) and f.mode == "RGB"
               for f in frames)
    again = reader[2]  # backwards: decoded again from the start, the same picture
    assert np.array_equal(np.asarray(again), np.asarray(frames[2]))
    with pytest.raises(IndexError):
        reader[FRAMES]
    tensors = VideoReader(str(clip), transform=lambda p: torch.from_numpy(np.asarray(p).copy()))
    assert tensors[0].shape == (256, 144, 3)
    reader.close()


def test_video_writer_takes_tchw_and_chw_grey_and_rgb(tmp_path):
    from nvpipe.inference_utils import VideoWriter

    writer = VideoWriter(str(tmp_path / "out.mp4"), frame_rate=25, bit_rate=2_000_000)
    writer.write(torch.rand(3, 3, 64, 96))   # [T, C, H, W]
    writer.write(torch.rand(3, 64, 96))      # [C, H, W]
    writer.write(torch.full((2, 1, 64, 96), 0.5))  # grey, written as RGB
    assert not (tmp_path / "out.mp4").exists()  # complete only once closed
    writer.close()
    writer.close()  # idempotent
    assert count_frames(tmp_path / "out.mp4") == 6
    import av

    with av.open(str(tmp_path / "out.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert np.abs(frames[-1].astype(int) - 128).max() <= 3
    with pytest.raises(RuntimeError, match="closed"):
        writer.write(torch.rand(3, 64, 96))


def test_image_sequence_reader_and_writer(tmp_path):
    from PIL import Image

    from nvpipe.inference_utils import ImageSequenceReader, ImageSequenceWriter

    writer = ImageSequenceWriter(str(tmp_path / "seq"), "png")
    writer.write(torch.rand(2, 3, 16, 24))
    writer.write(torch.rand(1, 4, 16, 24))
    writer.write(torch.rand(1, 1, 16, 24))
    writer.close()
    assert sorted(os.listdir(tmp_path / "seq")) == ["0000.png", "0001.png", "0002.png", "0003.png"]
    assert [Image.open(tmp_path / "seq" / f"000{i}.png").mode for i in range(4)] == \
        ["RGB", "RGB", "RGBA", "L"]
    jpg = ImageSequenceWriter(str(tmp_path / "jpg"))  # RVM's default extension
    jpg.write(torch.rand(1, 3, 16, 24))
    assert os.listdir(tmp_path / "jpg") == ["0000.jpg"]
    reader = ImageSequenceReader(str(tmp_path / "seq"), transform=np.asarray)
    assert len(reader) == 4 and reader[0].shape == (16, 24, 3)


def test_convert_video_png_sequences_are_named_as_rvm(clip, tmp_path, weights_env):
    from nvpipe import convert_video

    convert_video(None, input_source=str(clip), output_type="png_sequence",
                  output_alpha=str(tmp_path / "pha"), downsample_ratio=0.5, progress=False)
    assert sorted(os.listdir(tmp_path / "pha")) == [f"{i:04d}.png" for i in range(FRAMES)]
