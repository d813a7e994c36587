"""One vocabulary (nvpipe.job): the CLI's choices, the sinks, the kernels and rvm agree with
it; one default green per entry point, defined once; --help renders '%' once; a batch's
job template carries every Job and OutputSpec setting and pickles."""

import dataclasses
import os
import pickle
import re
from pathlib import Path

import pytest

from nvpipe import job
from nvpipe.sources.backgrounds import parse_color
from nvpipe.app.batch import QUALITY_FIELDS, clip_job, job_from_args, job_from_options
from nvpipe.app.cli import build_parser, main

NVPIPE = Path(job.__file__).parent


def _choices(parser, command, option):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


def test_cli_choices_are_the_jobs_vocabulary():
    parser = build_parser()
    assert _choices(parser, "run", "--type") == job.OUTPUT_KINDS
    assert _choices(parser, "run", "--variant") == job.VARIANTS
    assert _choices(parser, "run", "--encoder") == job.ENCODERS
    assert _choices(parser, "run", "--codec") == job.CODECS
    assert _choices(parser, "run", "--dtype") == job.DTYPES
    assert _choices(parser, "run", "--engine") == job.CPU_ENGINES
    assert _choices(parser, "run", "--device") == ("auto", *job.DEVICES)


def test_the_rest_of_the_code_agrees_with_the_vocabulary():
    import rvm
    from nvpipe.kernels._common import KIND_CODES
    from nvpipe.sinks import pyav

    assert set(job.OUTPUT_KINDS) == set(KIND_CODES)
    assert tuple(rvm.VARIANTS) == job.VARIANTS
    # rawvideo: what stream outputs (--format nut, y4m) carry, not a --codec choice.
    assert set(job.CODECS) == set(pyav.ENCODERS) - {"rawvideo"} | {"png"}
    assert pyav.ALPHA_KINDS is job.ALPHA_KINDS
    from nvpipe.engine.matting.engines import ENGINES

    assert ENGINES == job.CPU_ENGINES


def test_kinds_and_greens_are_written_in_one_place():
    """No module but nvpipe/job.py spells out the list of kinds or holds a default green as
    a string (backgrounds.py's table of colour names excepted)."""
    green = re.compile(r"[\"'](#00ff00|#78ff9b)[\"']", re.IGNORECASE)
    for path in NVPIPE.rglob("*.py"):
        if path.name == "job.py":
            continue
        text = path.read_text().replace("'", '"')
        assert '"rgba_premultiplied")' not in text, path
        if path.name != "backgrounds.py":
            assert not green.search(text), (path, green.findall(text))


def test_default_greens():
    assert parse_color(job.RVM_GREEN) == pytest.approx((120 / 255, 1.0, 155 / 255))
    assert parse_color(job.DEFAULT_GREEN) == (0.0, 1.0, 0.0)
    assert job.Job("in.mp4").background == job.DEFAULT_GREEN
    assert job_from_options("in.mp4", "out.mp4").background == job.DEFAULT_GREEN
    assert job_from_options("in.mp4", "out.mov").outputs[0].kind == "rgba"


def test_help_shows_percent_signs_once(capsys):
    for command in ([], ["run"], ["export"], ["weights"], ["info"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out
        assert "%%" not in text, (command, re.findall(r".{20}%%.{10}", text))
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "%05d.png" in text
    for flag in ("-y, --overwrite", "-q, --quiet", "-v, --verbose", "--start T",
                 "--duration T", "--frames N", "--fps R", "resnet50", "ProRes 4444"):
        assert flag in text, flag


def test_short_flags_mean_the_long_ones():
    parser = build_parser()
    short = parser.parse_args(["run", "a.mp4", "b.mp4", "-y", "-q", "-v"])
    long = parser.parse_args(["run", "a.mp4", "b.mp4", "--overwrite", "--quiet", "--verbose"])
    assert (short.overwrite, short.quiet, short.verbose) == (True, True, True)
    assert vars(short) == vars(long)


def test_a_batch_template_carries_every_setting_and_pickles():
    """A batch clip's job is the template with its input and outputs replaced: every option
    reaches it by its field's name, and the template pickles (worker processes, Ray)."""
    args = build_parser().parse_args(["run", "clips/", "out/", "--start", "1:02.5", "--frames",
                                      "7", "--crf", "20", "--ratio", "0.25", "-y",
                                      "--alpha", ".mov"])
    option_names = set(vars(args))
    job_names = {f.name for f in dataclasses.fields(job.Job)} - {"input", "outputs",
                                                                 "input_options"}
    stream_only = {"format"}  # --format is a stream output's (cli._stream_job sets it)
    assert job_names | set(QUALITY_FIELDS) - stream_only <= option_names
    template = job_from_args(args, output="out/{stem}.mp4")
    assert pickle.loads(pickle.dumps(template)) == template
    built = clip_job(template, "clips/a.mp4", "out")
    assert built.input == "clips/a.mp4"
    assert [spec.path for spec in built.outputs] == [os.path.join("out", "a.mp4"),
                                                     os.path.join("out", "a_alpha.mov")]
    assert (built.start, built.frames, built.ratio, built.overwrite) == (62.5, 7, 0.25, True)
    assert [spec.crf for spec in built.outputs] == [20, 20]
    assert [spec.kind for spec in built.outputs] == ["composite", "alpha"]
    assert dataclasses.replace(template, device="cuda").device == "cuda"


def test_resnet50_without_weights_is_one_clear_line(small_clip, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NVPIPE_WEIGHTS", raising=False)  # offline, empty cache (conftest)
    out = tmp_path / "out.mp4"
    assert main(["run", str(small_clip), str(out), "--variant", "resnet50"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "resnet50" in lines[0] and "weights" in lines[0], lines
    assert not out.exists()
