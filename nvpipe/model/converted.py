"""ONNX weights converted once: ``rvm.load`` of an ``.onnx`` file, cached as a state_dict.

Reading the official ONNX takes ``import onnx`` (0.7 s of CPU here) and the graph matching
of ``rvm.load_onnx``; a CPU run's start-up is part of what a user waits for. The folded
network's state_dict is saved under ``$NVPIPE_CACHE/converted`` (default
``~/.cache/nvpipe``), keyed by the file's path, size and modification time, and loaded
from there next time (strictly, into ``rvm.MattingNetwork(variant, folded=True)``). Any
problem with the cached file (damaged, keys changed with the code) falls back to
``rvm.load`` and rewrites it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

import torch


def _cache_path(path: str, variant: str) -> Path:
    stat = os.stat(path)
    key = hashlib.sha256(f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|"
                         f"{variant}".encode()).hexdigest()[:24]
    from rvm import cache_dir

    return cache_dir() / "converted" / f"{variant}-{key}.pt"


def load(source: Optional[str], variant: str = "mobilenetv3", device="cpu",
         dtype: torch.dtype = torch.float32):
    """``rvm.load(source, variant, device, dtype)``, ONNX conversions cached (module docstring)."""
    import rvm
    from rvm.load import detect_format
    from rvm.weights import resolve_weights

    path = os.fspath(resolve_weights(source, variant))
    if detect_format(path) != "onnx":
        return rvm.load(path, variant=variant, device=device, dtype=dtype)
    cached = _cache_path(path, variant)
    if cached.exists():
        try:
            network = rvm.MattingNetwork(variant, folded=True)
            network.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True),
                                    strict=True)
            network.has_segmentation_head = False  # the ONNX exports have none
            return network.eval().to(device=device, dtype=dtype)
        except Exception:  # noqa: BLE001 - a damaged or outdated cache: convert again
            pass
    network = rvm.load(path, variant=variant, device="cpu", dtype=torch.float32)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        temp = cached.with_name(f".{cached.name}.{os.getpid()}")
        torch.save(network.state_dict(), temp)
        os.replace(temp, cached)
    except OSError:
        pass  # a read-only cache: convert again next time
    return network.to(device=device, dtype=dtype)


__all__ = ["load"]
