#!/usr/bin/env bash
# Issue 4's first GPU session, in three device calls (each under the tool's 10 minutes).
# Prepare .gpu/ here with bench/gpu_prepare.sh, then through the device tool:
#
#   run(command="bash bench/gpu_session.sh checks", carry=[".gpu"], timeout_s=600)
#   run(command="bash bench/gpu_session.sh bench",  carry=[".gpu"], timeout_s=600)
#   run(command="bash bench/gpu_session.sh bench4k", carry=[".gpu"], timeout_s=600)
#
# checks: the GPU's facts, `nvpipe info`, the whole test suite (on a GPU the kernel tests
#         run the compiled Triton kernels, and the 22 needs_cuda tests run), one real
#         `nvpipe run --device cuda --verbose` with its output read back.
# bench:  bench/kernels.py with a tile sweep, then bench/throughput.py --device cuda on a
#         real 1080p clip (network, decode, --jobs, null sink and encoded end to end).
# bench4k: the same on generated 1080p and 4K clips with --jobs 1,2,4,7, and 4K memory.
# Step limits add up to under 600 s a phase.
# Every step runs under its own timeout and the next one runs whatever happened; the log
# and the JSON results land in $OUT (what the device tool brings back).
set -u
cd "$(dirname "$0")/.."
phase=${1:-checks}
OUT=${OUT:-/tmp/nvpipe-gpu-out}
mkdir -p "$OUT/results"
LOG="$OUT/$phase.log"
: >"$LOG"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start rc first
    shift 2
    echo "=== $name: $*" | tee -a "$LOG"
    first=$(($(wc -l <"$LOG") + 1))
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    tail -n "+$first" "$LOG" | tail -n 15 | sed "s/^/    /"  # this step's last lines
    echo "=== $name: exit $rc after $(($(date +%s) - start)) s" | tee -a "$LOG"
    return 0
}

# --- setup (idempotent: a warm machine keeps what an earlier call installed)
[ -d .gpu/wheels ] || { echo "no .gpu/: run bash bench/gpu_prepare.sh and carry .gpu" | tee -a "$LOG"; exit 2; }
python3 -c "import av" 2>/dev/null || python3 -m pip install -q --no-deps --no-index .gpu/wheels/*.whl >>"$LOG" 2>&1
[ -d .gpu/site ] || tar -C .gpu -xJf .gpu/site.tar.xz
export PYTHONPATH="$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import nvpipe" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1
export NVPIPE_SHARED="$PWD/.gpu/shared"
WEIGHTS="$NVPIPE_SHARED/weights/rvm_mobilenetv3_bnidentity.pth"
CLIP="$NVPIPE_SHARED/footage/four_people_1080p.mp4"
export NVPIPE_WEIGHTS="$WEIGHTS"

case "$phase" in
checks)
    step facts 30 bash -c 'nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
        python3 -c "import torch, triton, av; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda,
        \"triton\", triton.__version__, \"av\", av.__version__)"; python3 -c "import PyNvVideoCodec as n; print(\"PyNvVideoCodec\", getattr(n, \"__version__\", \"?\"))"'
    step info 30 python3 -m nvpipe.cli info
    step gpu-tests-first 120 python3 -m pytest -q -x -p no:cacheprovider tests/test_gpu_probe.py tests/test_gpu_graphs.py
    step all-tests 300 python3 -m pytest -q -p no:cacheprovider -o junit_family=xunit2 \
        --junitxml="$OUT/results/pytest-gpu.xml" tests
    rm -f /tmp/nvpipe-out.mp4
    step run-cuda 60 python3 -m nvpipe.cli run "$CLIP" /tmp/nvpipe-out.mp4 --device cuda --verbose --overwrite
    step run-cuda-readback 20 python3 -c "
import av, sys
with av.open('/tmp/nvpipe-out.mp4') as c, av.open(sys.argv[1]) as i:
    n = sum(1 for _ in c.decode(video=0)); m = i.streams.video[0].frames
    print('frames out', n, 'in', m, 'size', c.streams.video[0].width, c.streams.video[0].height)
    assert n == m" "$CLIP"
    ;;
bench)
    step kernels 240 python3 bench/kernels.py --tail-blocks 8,64,8 16,64,8 16,64,4 \
        --output "$OUT/results/kernels.json"
    step throughput-clip 300 python3 bench/throughput.py --device cuda "$CLIP" --weights "$WEIGHTS" \
        --jobs 1,2,4 --out "$OUT/results"
    ;;
bench4k)
    step throughput-generated 560 python3 bench/throughput.py --device cuda --weights "$WEIGHTS" \
        --jobs 1,2,4,7 --frames 90 --repeats 1 --out "$OUT/results"
    ;;
*)
    echo "usage: bash bench/gpu_session.sh checks|bench|bench4k" >&2
    exit 2
    ;;
esac
tar -C "$OUT" -czf "$OUT/results-$phase.tar.gz" results
echo "done: $LOG, $OUT/results-$phase.tar.gz"
