"""The README's examples run as written, or say what they need: every command line of its
bash blocks parses with nvpipe's own parsers; lines that need ffmpeg, a GPU or material of
the reader's say so in their comment; and the Use block's lines run, as written, on a real
clip (in.mp4), a photo (photo.jpg) and a picture (beach.jpg)."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLIP_FRAMES, count_frames

README = Path(__file__).resolve().parents[1] / "README.md"


def _bash_lines(block_heading: str = "") -> list[tuple[str, str]]:
    """``(command, comment)`` of every line of the README's bash blocks (after
    ``block_heading`` only, up to its first block, when given)."""
    text = README.read_text()
    if block_heading:
        text = text[text.index(block_heading):]
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    if block_heading:
        blocks = blocks[:1]
    lines = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            command, _, comment = line.partition(" # ")
            if command.strip() and not command.lstrip().startswith("#"):
                lines.append((command.strip(), comment.strip()))
    return lines


def test_every_command_parses_or_says_what_it_needs():
    from nvpipe.app.cli import build_parser
    from nvpipe.inference import build_parser as rvm_parser

    parser = build_parser()
    checked = 0
    for command, comment in _bash_lines():
        for part in command.split("|"):
            words = shlex.split(part)
            if words[0] in ("ffmpeg", "ffplay"):
                assert "needs ffmpeg" in comment, command
            elif words[0] == "nvpipe":
                if "--device" in words and words[words.index("--device") + 1].startswith("cuda"):
                    assert "needs" in comment, command
                try:
                    parser.parse_args(words[1:])
                except SystemExit as done:  # --version prints and exits 0
                    assert done.code == 0, command
                checked += 1
            elif words[:3] == ["python", "-m", "nvpipe.inference"]:
                rvm_parser().parse_args(words[3:])
                checked += 1
    assert checked > 30


@pytest.mark.slow
def test_the_use_block_runs_as_written(small_clip, weights_env, tmp_path):
    import av

    with av.open(str(small_clip)) as container:
        picture = next(container.decode(video=0)).to_image()
    skipped = ("--watch", "cuda", "--start", "portrait_1080p", "nvpipe info")
    ran = 0
    for number, (command, comment) in enumerate(_bash_lines("## Use")):
        if any(word in command for word in skipped):
            continue
        folder = tmp_path / f"line{number}"
        (folder / "frames").mkdir(parents=True)
        (folder / "clips").mkdir()
        (folder / "in.mp4").write_bytes(small_clip.read_bytes())
        (folder / "clips" / "in.mp4").write_bytes(small_clip.read_bytes())
        picture.save(folder / "photo.jpg")
        picture.save(folder / "beach.jpg")
        if "frames/ out.mp4" in command:  # a picture sequence in
            for index in range(3):
                picture.save(folder / "frames" / f"{index:05d}.png")
        words = shlex.split(command)
        done = subprocess.run([sys.executable, "-m", "nvpipe", *words[1:], "-q"], cwd=folder,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr)
        ran += 1
        out = folder / words[3] if len(words) > 3 else None
        if out is not None and out.suffix in (".mp4", ".mov", ".webm"):
            expected = 3 if "frames/ out.mp4" in command else CLIP_FRAMES
            assert count_frames(out) == expected, command
    assert ran >= 10
