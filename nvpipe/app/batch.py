"""Jobs from command-line style options, and batches of clips (a directory or a glob)."""

from __future__ import annotations

import dataclasses
import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from nvpipe.errors import NvpipeError
from nvpipe.job import DEFAULT_GREEN, Job, OutputSpec

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".mts", ".ts", ".flv",
                    ".wmv", ".mpg", ".mpeg", ".3gp"}
ALPHA_EXTENSIONS = {".mov", ".webm"}


def carries_alpha(path: str) -> bool:
    """Whether an output format takes alpha: .mov, .webm, a PNG sequence (the sinks'
    rule: a folder, a name without extension, or a ``%05d.png`` pattern), or one picture
    that keeps alpha (.png, .webp, .tif)."""
    from nvpipe.sinks.images import is_sequence_output
    from nvpipe.sinks.picture import is_picture_output, picture_keeps_alpha

    if is_picture_output(path):
        return picture_keeps_alpha(path)
    return is_sequence_output(path) or Path(path).suffix.lower() in ALPHA_EXTENSIONS


# OutputSpec's quality fields: the options every output of a job shares.
QUALITY_FIELDS = tuple(spec.name for spec in dataclasses.fields(OutputSpec)
                       if spec.name not in ("path", "kind"))
_PER_CLIP = ("input", "outputs", "background")  # replaced per clip, or decided here


def main_kind(output: str, kind: Optional[str] = None, background: Optional[str] = None) -> str:
    """The main output's kind: ``kind`` when given, else RGBA where the background is
    ``none`` or, left unset, where the format carries alpha; else a composite."""
    if kind is not None:
        return kind
    if background is not None and background.lower() == "none":
        return "rgba"
    if background is None and carries_alpha(output):
        return "rgba"
    return "composite"


def _distinct(outputs: list[OutputSpec]) -> list[OutputSpec]:
    paths = [os.path.abspath(spec.path) for spec in outputs]
    if len(set(paths)) != len(paths):
        raise NvpipeError("two outputs have the same path: " + ", ".join(
            spec.path for spec in outputs))
    return outputs


def job_from_options(input: str, output: str, *, alpha: Optional[str] = None,
                     foreground: Optional[str] = None, kind: Optional[str] = None,
                     background: Optional[str] = None, **settings) -> Job:
    """The job ``nvpipe run``'s options describe: ``settings`` are Job's fields and
    OutputSpec's quality fields (crf, codec...) by name; the main output's kind follows
    ``main_kind``; ``--alpha``/``--foreground`` outputs take their codec from their names.

    For a batch this job is the template: its input and output paths are placeholders that
    ``clip_job`` replaces per clip (``output`` only decides the main kind, by its format)."""
    quality = {name: settings.pop(name) for name in QUALITY_FIELDS if name in settings}
    outputs = [OutputSpec(output, kind=main_kind(output, kind, background), **quality)]
    extra = dict(quality, codec=None)
    if alpha:
        outputs.append(OutputSpec(alpha, kind="alpha", **extra))
    if foreground:
        outputs.append(OutputSpec(foreground, kind="foreground", **extra))
    if background is not None and background.lower() == "none":
        background = None
    return Job(input=input, outputs=_distinct(outputs), background=background or DEFAULT_GREEN,
               **settings)


def job_from_args(args, output: Optional[str] = None) -> Job:
    """``job_from_options`` from parsed ``nvpipe run`` arguments (each option's dest is its
    field's name); ``output`` replaces ``args.output`` (a batch's placeholder)."""
    names = [spec.name for spec in dataclasses.fields(Job) if spec.name not in _PER_CLIP]
    settings = {name: getattr(args, name) for name in (*names, *QUALITY_FIELDS)
                if hasattr(args, name)}
    return job_from_options(args.input, output or args.output, alpha=args.alpha,
                            foreground=args.foreground, kind=args.kind,
                            background=args.background, **settings)


def clip_job(template: Job, input_path: str, out: str) -> Job:
    """A batch clip's job: the template with its input and outputs replaced. The main
    output goes where ``batch_outputs`` says; the extra outputs' names in the template
    (``--alpha``/``--foreground``) become the clip's by ``_name_for``."""
    output, out_dir = batch_outputs(input_path, out)
    stem = Path(input_path).stem
    main, *extra = template.outputs
    outputs = [dataclasses.replace(main, path=output)]
    outputs += [dataclasses.replace(spec, path=_name_for(spec.path, stem, f"_{spec.kind}", out_dir))
                for spec in extra]
    return dataclasses.replace(template, input=input_path, outputs=_distinct(outputs))


def _is_glob(text: str) -> bool:
    return any(char in text for char in "*?[")


def batch_inputs(source: str) -> list[str]:
    """The video files a batch input names, sorted; [] when it names no batch."""
    if _is_glob(source) and not os.path.exists(source):
        candidates = glob.glob(source)
    elif os.path.isdir(source):
        candidates = [str(path) for path in Path(source).iterdir()]
    else:
        return []
    return sorted(path for path in candidates
                  if os.path.isfile(path) and Path(path).suffix.lower() in VIDEO_EXTENSIONS)


def is_batch(source: str) -> bool:
    """A glob, or a directory holding videos (a directory of images is one image sequence);
    never a stream (``udp://host:port?fifo_size=...`` is not a glob)."""
    from nvpipe.sources.live import locate_input

    if not locate_input(source).is_file:
        return False
    return (_is_glob(source) and not os.path.exists(source)) or bool(batch_inputs(source))


def _name_for(template: str, stem: str, default_suffix: str, out_dir: str) -> str:
    """An extra output's path in a batch (``--alpha``/``--foreground``):

    - a template with ``{stem}`` (``{stem}_pha.mp4``, ``mattes/{stem}.mov``): a bare name
      goes into the clip's output folder, a path with a folder is taken as it is;
    - an extension (``.mov``, ``mov``): ``<stem><default_suffix>.mov`` (``a_alpha.mov``);
    - a name (``pha.mp4``): ``<stem>_pha.mp4`` in the output folder.
    """
    if "{stem}" in template:
        name = template.format(stem=stem)
        return name if os.path.dirname(template) else os.path.join(out_dir, name)
    if "." not in template.lstrip(".") or template.startswith("."):
        extension = "." + template.lstrip(".*")
        return os.path.join(out_dir, f"{stem}{default_suffix}{extension}")
    return os.path.join(out_dir, f"{stem}_{os.path.basename(template)}")


def batch_outputs(input_path: str, out: str) -> tuple[str, str]:
    """(main output path, output directory) for one clip of a batch."""
    stem = Path(input_path).stem
    if "{stem}" in out:
        path = out.format(stem=stem)
        return path, os.path.dirname(path) or "."
    return os.path.join(out, f"{stem}.mp4"), out


@dataclass
class BatchSummary:
    converted: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    # Clips never started because the batch could not go on (the Ray cluster was lost).
    not_started: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # of the converted clips
    frames: int = 0  # written, over the converted clips

    def report(self) -> str:
        counts = (f"nvpipe: batch: {len(self.converted)} converted, {len(self.skipped)} "
                  f"skipped, {len(self.failed)} failed")
        if self.not_started:
            counts += f", {len(self.not_started)} not started"
        lines = [counts]
        lines += [f"nvpipe: skipped: {path}: {reason}" for path, reason in self.skipped]
        lines += [f"nvpipe: failed: {path}: {reason}" for path, reason in self.failed]
        lines += [f"nvpipe: not started: {path}: {reason}" for path, reason in self.not_started]
        return "\n".join(lines)


def job_settings(job: Job) -> str:
    """The fingerprint of what shapes a job's outputs (not where they go, nor the device)."""
    from nvpipe.app.manifest import settings_fingerprint

    outputs = [(os.path.basename(os.path.normpath(spec.path)), spec.kind, spec.codec, spec.crf,
                spec.bitrate, spec.preset) for spec in job.outputs]
    settings = {
        "ratio": job.ratio, "variant": job.variant, "weights": job.weights,
        "background": job.background, "chunk": job.chunk, "dtype": job.dtype,
        "resize": job.resize, "outputs": outputs}
    # Trimming, a sequence's rate and the cut reset shape the outputs too; recorded only
    # when not the default, so the records of batches run without them stay valid.
    for name, untrimmed in (("start", 0.0), ("duration", None), ("frames", None), ("fps", None),
                            ("cut_reset", True)):
        if getattr(job, name) != untrimmed:
            settings[name] = getattr(job, name)
    spec = job.subject_spec  # who is kept shapes the outputs too
    if spec is not None:
        settings["subject"] = [list(spec.points), spec.main, spec.mask]
    return settings_fingerprint(settings)


# Why a clip is redone or left alone, by the states of its outputs (nvpipe.app.manifest).
_REASONS = {"incomplete": "the last run did not finish it (failed, interrupted or killed)",
            "foreign": "exists and was not written by this batch (use --overwrite to replace it)",
            "stale": "exists from another input or other settings (use --overwrite to redo it)",
            "complete": "done"}


def _recorded_outputs(job: Job) -> list[str]:
    """The outputs a batch records: files and picture sequences (not the null output)."""
    from nvpipe.sinks import is_null_output

    return [str(spec.path) for spec in job.outputs if not is_null_output(spec.path)]


def plan_clip(job: Job) -> tuple[bool, str, Optional[str]]:
    """``(convert, reason, redo_note)`` for one clip of a batch from its outputs' records:
    convert unless every output is complete, or one is foreign/stale without overwrite."""
    from nvpipe.app.manifest import manifests_for

    settings = job_settings(job)
    states = {path: manifest.state(path, job.input, settings)
              for path, manifest in manifests_for(_recorded_outputs(job)).items()}
    if job.overwrite or not states:
        return True, "", None
    if all(state == "complete" for state in states.values()):
        return False, _REASONS["complete"], None
    for blocking in ("foreign", "stale"):
        blocked = [p for p, state in states.items() if state == blocking]
        if blocked:
            return False, f"{os.path.basename(blocked[0])} {_REASONS[blocking]}", None
    redo = [p for p, state in states.items() if state in ("incomplete", "complete")]
    note = (f"redo {', '.join(os.path.basename(p) for p in redo)}: {_REASONS['incomplete']}"
            if any(states[p] == "incomplete" for p in redo) else None)
    return True, "", note
