"""How many clips at once this machine (or a cluster's GPU) takes, and why: one per NVDEC
engine on GPUs, as long as each clip has its cores; one per core on the CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from nvpipe.errors import NvpipeError

# Clips per GPU where the submitting machine cannot count NVDEC engines (no GPU there):
# one, the safe share; NVPIPE_CLIPS_PER_GPU says more.
DEFAULT_CLIPS_PER_GPU = 1
# CPUs a clip takes on a GPU: the decode/compose thread and a libx264 encoder (H100/H200
# have no NVENC, so their outputs encode on the CPU).
CPUS_PER_GPU_CLIP = 2


@dataclass
class Capacity:
    """How many clips at once this machine takes, and why."""

    clips: int
    reason: str
    cores: int
    gpus: int = 0
    nvdec_engines: list[int] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.clips} ({self.reason})"


def _nvdec_engines(gpu_id: int) -> Optional[int]:
    try:
        from nvpipe.platform.gpu import decoder_caps

        engines = decoder_caps("h264", 8, gpu_id).get("num_decoder_engines")
        return int(engines) if engines else None
    except Exception:  # noqa: BLE001 - no PyNvVideoCodec, no GPU: not countable
        return None


def capacity() -> Capacity:
    """Clips at once: on GPUs, one per NVDEC engine (7 on an H100/H200), as long as each
    clip has ``CPUS_PER_GPU_CLIP`` cores for decoding and encoding; on the CPU, one per
    core (each clip's network then runs on one thread)."""
    cores = os.cpu_count() or 1
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        gpus = 0
    if gpus == 0:
        return Capacity(cores, f"no CUDA GPU: one clip per CPU core ({cores} cores)", cores)
    engines = [_nvdec_engines(gpu) for gpu in range(gpus)]
    counted = [count or DEFAULT_CLIPS_PER_GPU for count in engines]
    by_nvdec = sum(counted)
    by_cores = max(1, cores // CPUS_PER_GPU_CLIP)
    clips = min(by_nvdec, by_cores)
    why = (f"{gpus} GPU(s) with " + ", ".join(
        f"{count} NVDEC engine(s)" if count else "NVDEC engines not countable (1 clip)"
        for count in engines) + f" = {by_nvdec}; {cores} cores / {CPUS_PER_GPU_CLIP} per clip "
        f"= {by_cores}")
    return Capacity(clips, why, cores, gpus, [count or 0 for count in engines])


def clips_per_gpu() -> int:
    """A GPU's share for one clip on a cluster: its NVDEC engine count, counted on this
    machine's first GPU (``NVPIPE_CLIPS_PER_GPU`` overrides; 1 where nothing can count)."""
    override = os.environ.get("NVPIPE_CLIPS_PER_GPU")
    if override:
        try:
            value = int(override)
        except ValueError:
            value = 0
        if value < 1:
            raise NvpipeError(f"NVPIPE_CLIPS_PER_GPU must be a whole number >= 1, got {override!r}")
        return value
    return _nvdec_engines(0) or DEFAULT_CLIPS_PER_GPU


def clip_resources(device: str) -> dict:
    """The Ray resources one clip asks for: on ``cuda`` a 1/engines share of a GPU (a GPU
    then takes as many clips as it has NVDEC engines) and ``CPUS_PER_GPU_CLIP`` CPUs; on
    the CPU one core (its network on one thread)."""
    if str(device).startswith("cuda"):
        # Ray counts GPU shares in steps of 1e-4: 1/7 rounds down, so 7 shares still fit.
        share = int(10_000 / clips_per_gpu()) / 10_000
        return {"num_gpus": share, "num_cpus": CPUS_PER_GPU_CLIP}
    return {"num_cpus": 1}
