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
    """Whether an output format takes alpha: .mov, .webm, or a PNG sequence (the sinks'
    rule: a folder, a name without extension, or a ``%05d.png`` pattern)."""
    from nvpipe.sinks.images import is_sequence_output

    return is_sequence_output(path) or Path(path).suffix.lower() in ALPHA_EXTENSIONS


def _options_fields() -> list:
    """BatchOptions' fields: every ``Job`` field but the paths, every ``OutputSpec`` quality
    field, and the batch's own (``kind``, ``alpha``, ``foreground``, ``verbose``), with the
    defaults of ``Job``/``OutputSpec`` except ``background`` (None: by the output format)."""
    def copied(cls, leave_out):
        for spec in dataclasses.fields(cls):
            if spec.name in leave_out:
                continue
            default = (dataclasses.field(default_factory=spec.default_factory)
                       if spec.default_factory is not dataclasses.MISSING
                       else dataclasses.field(default=spec.default))
            yield spec.name, spec.type, default

    own = [("background", "Optional[str]", dataclasses.field(default=None)),
           ("kind", "Optional[str]", dataclasses.field(default=None)),
           ("alpha", "Optional[str]", dataclasses.field(default=None)),
           ("foreground", "Optional[str]", dataclasses.field(default=None)),
           ("verbose", "bool", dataclasses.field(default=False))]
    return [*copied(Job, _JOB_OWN), *copied(OutputSpec, _SPEC_OWN), *own]


_JOB_OWN = ("input", "outputs", "background")  # per clip, or the batch's own default
_SPEC_OWN = ("path", "kind")


class _BatchOptionsMethods:
    @classmethod
    def from_args(cls, args) -> "BatchOptions":
        names = cls.__dataclass_fields__
        return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)})

    def main_kind(self, output: str) -> str:
        if self.kind is not None:
            return self.kind
        if self.background is not None and self.background.lower() == "none":
            return "rgba"
        if self.background is None and carries_alpha(output):
            return "rgba"
        return "composite"

    def job(self, input_path: str, output: str, *, alpha: Optional[str] = None,
            foreground: Optional[str] = None) -> Job:
        kind = self.main_kind(output)
        quality = {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(OutputSpec)
                   if spec.name not in _SPEC_OWN}
        outputs = [OutputSpec(output, kind=kind, **quality)]
        # The extra outputs take their codec from their own names.
        extra = dict(quality, codec=None)
        if alpha:
            outputs.append(OutputSpec(alpha, kind="alpha", **extra))
        if foreground:
            outputs.append(OutputSpec(foreground, kind="foreground", **extra))
        paths = [os.path.abspath(spec.path) for spec in outputs]
        if len(set(paths)) != len(paths):
            raise NvpipeError("two outputs have the same path: " + ", ".join(
                spec.path for spec in outputs))
        background = self.background
        if background is not None and background.lower() == "none":
            background = None
        settings = {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(Job)
                    if spec.name not in _JOB_OWN}
        return Job(input=input_path, outputs=outputs, background=background or DEFAULT_GREEN,
                   **settings)


# Everything of a job but its paths: what ``nvpipe run`` options say. Its fields are derived
# from Job's and OutputSpec's (one vocabulary); a plain picklable dataclass of this module
# (worker processes and Ray tasks receive it).
BatchOptions = dataclasses.make_dataclass(
    "BatchOptions", _options_fields(), bases=(_BatchOptionsMethods,))
BatchOptions.__module__ = __name__  # pickle finds it here (make_dataclass's module= is 3.12+)
BatchOptions.__doc__ = ("Everything of a job but its paths (what ``nvpipe run`` options say): "
                        "the fields of Job and OutputSpec, and kind, alpha, foreground, verbose.")


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

    def report(self) -> str:
        lines = [f"nvpipe: batch: {len(self.converted)} converted, {len(self.skipped)} skipped, "
                 f"{len(self.failed)} failed"]
        lines += [f"nvpipe: skipped: {path}: {reason}" for path, reason in self.skipped]
        lines += [f"nvpipe: failed: {path}: {reason}" for path, reason in self.failed]
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
