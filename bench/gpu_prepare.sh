#!/usr/bin/env bash
# Builds .gpu/ (git-ignored) on the CPU machine for a GPU session through the device tool.
# The GPU machines have torch, Triton and NVML but not PyAV or PyNvVideoCodec, reach no
# network, and do not see ../shared; the device tool carries at most 64 MiB with the tree.
#
#   bash bench/gpu_prepare.sh        # here, once (needs PyPI)
#   bash bench/gpu_session.sh --dry-run   # here: every step's plumbing, no GPU needed
#   device run: command "bash bench/gpu_session.sh", carry [".gpu"], timeout_s 480   # one call
#
# .gpu/wheels   PyAV (abi3 wheel, installs on the GPU machines' Python 3.12)
# .gpu/site.tar.xz  PyNvVideoCodec 2.2.4 without its samples, FFmpeg source tarball and
#               duplicate library copies (27 MB wheel -> 12 MB -> 3 MB as xz); gpu_session.sh
#               unpacks it to .gpu/site and puts that on PYTHONPATH
# .gpu/shared   the weights and clips the GPU tests and benchmarks read (NVPIPE_SHARED); not
#               the ONNX file (15 MB): the ONNX parity tests skip there, they run in CI
# .gpu/tools    ../shared/tools/gpu/ctxleak.py, the stray-context reproduction (3 KB)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${NVPIPE_SHARED:-../shared}
PYNVVIDEOCODEC_VERSION=2.2.4
PYTHON=${PYTHON:-python3}  # one with PyAV installed (its version is the wheel carried)

[ -d "$SHARED/weights" ] || { echo "gpu_prepare: $SHARED/weights not found (set NVPIPE_SHARED)" >&2; exit 1; }
rm -rf .gpu
mkdir -p .gpu/wheels .gpu/shared/weights .gpu/shared/footage/color .gpu/tools
download() {
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 -d "$1" "$2"
}

av_version=$("$PYTHON" -c 'import av; print(av.__version__)')
download .gpu/wheels "av==$av_version"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
download "$scratch" "pynvvideocodec==$PYNVVIDEOCODEC_VERSION"
"$PYTHON" - "$scratch" "$scratch/site" <<'EOF'
import sys, zipfile
from pathlib import Path

wheel = next(Path(sys.argv[1]).glob("*.whl"))
keep = ("PyNvVideoCodec/", "pynvvideocodec./")
# The extension needs libavformat.so.63 and libavutil.so.61 (its NEEDED entries); the wheel
# also holds two more copies of each under other names.
drop = ("libavformat.so", "libavformat.so.63.1.101", "libavutil.so", "libavutil.so.61.1.101")
with zipfile.ZipFile(wheel) as archive:
    for info in archive.infolist():
        name = info.filename
        if info.is_dir() or not name.startswith(keep) or Path(name).name in drop:
            continue
        target = Path(sys.argv[2], name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(info))
        if name.endswith(".so") or ".so." in name:
            target.chmod(0o755)
EOF
tar -C "$scratch" -cJf .gpu/site.tar.xz site

cp "$SHARED/weights/rvm_mobilenetv3_bnidentity.pth" .gpu/shared/weights/
cp "$SHARED/tools/gpu/ctxleak.py" .gpu/tools/
cp "$SHARED/footage/four_people_1080p.mp4" "$SHARED/footage/person_fullbody_360x640.mp4" .gpu/shared/footage/
# Every clip tests/sources/test_nvdec.py compares (CLIPS there), so none of them skips.
for clip in h264_10bits.mp4 h265_10bits.mp4 h265_video.mp4 av1_video.mkv bt601_limited_range.mp4 \
            bt601_full_range.mp4 bt2020_10bit.mp4 bt709_full_range.mp4 nasa_13013.mp4 \
            nasa_13013_rotated.mp4; do
    cp "$SHARED/footage/color/$clip" .gpu/shared/footage/color/
done

# What the device call sends: the tree and .gpu together, against its 64 MiB.
"$PYTHON" bench/gpu_carry.py --carry .gpu || {
    echo "gpu_prepare: the tree and .gpu are over the device's limit: it would refuse the call" >&2
    exit 1
}
