"""``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (as torch and RVM take it), and
what ``auto`` resolves to here (``nvpipe.platform.gpu.resolve_device``)."""

from __future__ import annotations

import argparse
from typing import Optional

from nvpipe.errors import UsageError
from nvpipe.job import DEVICES, parse_device


class DeviceChoices(tuple):
    """``--device``'s choices: iterates as ``auto, cpu, cuda`` (what ``--help`` lists), and
    also contains every ``cuda:N``."""

    def __contains__(self, value) -> bool:
        return value == "auto" or _valid(value)


def _valid(value) -> bool:
    try:
        parse_device(value)
    except ValueError:
        return False
    return True


DEVICE_CHOICES = DeviceChoices(("auto", *DEVICES))
DEVICE_METAVAR = "{auto,cpu,cuda,cuda:N}"


def parse_device_option(text: str) -> str:
    """An argparse type: the device as given, lower case (``CUDA:1`` -> ``cuda:1``)."""
    value = str(text).strip().lower()
    if value not in DEVICE_CHOICES:
        raise argparse.ArgumentTypeError(f"device must be auto, cpu, cuda or cuda:N, got {text!r}")
    return value


def resolve(requested: str) -> tuple[str, Optional[str]]:
    """``(device, why not cuda)``: ``auto`` becomes ``cuda`` where the GPU pipeline can run
    here, else ``cpu`` and the reason; the others are returned as they are (a ``cuda`` that
    cannot run fails when the run starts: ``DeviceError``, exit code 5)."""
    from nvpipe.platform.gpu import resolve_device

    if requested not in DEVICE_CHOICES:  # a bad $NVPIPE_DEVICE (argparse checks only flags)
        raise UsageError(f"NVPIPE_DEVICE must be auto, cpu, cuda or cuda:N, got {requested!r}")
    if requested != "auto":
        return requested, None
    return resolve_device("auto")


__all__ = ["DEVICE_CHOICES", "DEVICE_METAVAR", "DeviceChoices", "parse_device_option", "resolve"]
