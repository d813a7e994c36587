#!/usr/bin/env bash
# The GPU path's first contact, in ONE device call of at most 450 s (issue 10).
# Prepare .gpu/ here with bench/gpu_prepare.sh (wheels, weights, clips, ctxleak.py), then:
#
#   run(command="bash bench/gpu_session.sh", carry=[".gpu"], timeout_s=480)
#
# Steps, most decisive first; each runs under its own timeout, cut to what is left of the
# 450 s budget (SESSION_SECONDS), and writes its results to $OUT as it ends, so a timeout
# still brings back everything measured before it:
#   setup      install the carried wheels (PyAV), unpack PyNvVideoCodec, nvpipe in place
#   facts      GPU, driver, video libraries, PyNvVideoCodec + PyAV in one process, cores
#   ctxleak    ../shared/tools/gpu/ctxleak.py as it is, then with --repair
#   context    nvpipe's own guard: every probe with cuCtxGetCurrent before/after
#   context-tests / nvdec-tests  the needs_cuda tests of those files (junit XML)
#   nvdec      NVDEC's DLPack layout (NV12, P016), frame counts and timestamps vs PyAV
#   clips      the 1080p clip looped and scaled to 1080p and 4K (real content)
#   network    4K/0.125, 1080p/0.25: FP32 eager, FP16 TorchScript-frozen, FP16 graphs T=1,2,4
#   decode     NVDEC alone and with the converter, 1 and 7 sessions
#   end_to_end null sink and CPU-encoded, NVML utilisation, busy cores; memory at 4K
#   x264       libx264 ceilings per preset at 1080p and 4K, with the thread count
#   fidelity   FP16 vs FP32 alpha per frame
# A dry run on a machine without a GPU (OUT=/tmp/x bash bench/gpu_session.sh) shows each
# GPU step failing with its one-line reason and the results files written. SKIP="clips
# x264" leaves steps out (tests/bench/test_gpu_bench.py does, to stay cheap).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/nvpipe-gpu-out}
PYTHON=${PYTHON:-python3}
SESSION_SECONDS=${SESSION_SECONDS:-450}
SKIP=${SKIP:-}
CARRY=${CARRY:-.gpu}  # what gpu_prepare.sh built (tests point it elsewhere)
case "$CARRY" in /*) ;; *) CARRY="$PWD/$CARRY" ;; esac
mkdir -p "$OUT"
LOG="$OUT/session.log"
SUMMARY="$OUT/steps.tsv"
: >"$LOG"
printf 'step\texit\tseconds\tlast line\n' >"$SUMMARY"
session_start=$(date +%s)

step() {  # step NAME SECONDS COMMAND...: stdout+stderr to $OUT/NAME.log, one line in steps.tsv
    local name=$1 limit=$2 start rc left last
    shift 2
    case " $SKIP " in *" $name "*)
        printf '%s\tskipped\t0\tSKIP\n' "$name" >>"$SUMMARY"; echo "=== $name: skipped" | tee -a "$LOG"; return 0;;
    esac
    left=$((SESSION_SECONDS - ($(date +%s) - session_start)))
    if [ "$left" -lt 5 ]; then
        printf '%s\tskipped\t0\tno time left of %s s\n' "$name" "$SESSION_SECONDS" >>"$SUMMARY"
        echo "=== $name: skipped, no time left" | tee -a "$LOG"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== $name (limit $limit s): $*" | tee -a "$LOG"
    start=$(date +%s)
    # bash -c: the steps may be this script's functions (exported below).
    timeout --kill-after=5 "$limit" bash -c '"$@"' "$name" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "timed out after $limit s" >>"$OUT/$name.log"
    last=$(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | tr '\t' ' ' | cut -c1-200)
    sed 's/^/    /' "$OUT/$name.log" | tail -n 8 | tee -a "$LOG"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" "$last" >>"$SUMMARY"
    echo "=== $name: exit $rc after $(($(date +%s) - start)) s" | tee -a "$LOG"
    return 0
}

setup() {
    [ -d "$CARRY/wheels" ] || { echo "setup: no $CARRY/ (run bash bench/gpu_prepare.sh here and carry .gpu)"; return 2; }
    "$PYTHON" -c "import av" 2>/dev/null || "$PYTHON" -m pip install -q --no-deps --no-index "$CARRY"/wheels/*.whl || return 1
    [ -d "$CARRY/site" ] || tar -C "$CARRY" -xJf "$CARRY/site.tar.xz" || return 1
    "$PYTHON" -c "import nvpipe" 2>/dev/null || "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . || return 1
    echo "setup: ok"
}

facts() {
    nvidia-smi -L || echo "facts: nvidia-smi failed (no NVIDIA driver here)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null
    nvidia-smi -q -d ENCODER_STATS 2>/dev/null | head -n 12
    echo "video libraries:"; ldconfig -p 2>/dev/null | grep -E 'libnvcuvid|libnvidia-encode|libcuda\.so' || echo "  none of libnvcuvid, libnvidia-encode, libcuda found"
    echo "cores: nproc $(nproc); $(lscpu 2>/dev/null | grep -E '^(Thread|Core|Socket|Model name)' | tr -s ' ' | paste -sd ';')"
    "$PYTHON" - <<'PY'
import json, platform
facts = {"python": platform.python_version()}
for name in ("torch", "triton", "av", "PyNvVideoCodec", "pynvml", "onnxruntime"):
    try:
        module = __import__(name)
        facts[name] = getattr(module, "__version__", "?")
    except Exception as error:  # PyNvVideoCodec raises RuntimeError without video libraries
        facts[name] = f"unavailable ({type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''})"
try:
    import torch
    facts["cuda"] = torch.version.cuda
    facts["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible to torch"
except Exception as error:
    facts["gpu"] = f"unavailable ({error})"
print(json.dumps(facts))
PY
}

export PYTHONPATH="$CARRY/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NVPIPE_SHARED=${NVPIPE_SHARED:-$CARRY/shared}
[ -d "$NVPIPE_SHARED" ] || NVPIPE_SHARED="$PWD/../shared"
export NVPIPE_WEIGHTS=${NVPIPE_WEIGHTS:-$NVPIPE_SHARED/weights/rvm_mobilenetv3_bnidentity.pth}
export CLIPS=${CLIPS:-/tmp/nvpipe-clips}
export OUT
CTXLEAK=$CARRY/tools/ctxleak.py
[ -f "$CTXLEAK" ] || CTXLEAK=../shared/tools/gpu/ctxleak.py
checks() { "$PYTHON" bench/gpu_checks.py "$@" --out "$OUT"; }
cuda_tests() {  # cuda_tests NAME FILE...: the file's tests; on a GPU its needs_cuda ones run too
    local name=$1; shift
    "$PYTHON" -m pytest -q -x -p no:cacheprovider --junitxml="$OUT/$name.xml" "$@"
}

ctxleak() {  # as shipped, then with --repair; the exit status is the first run's
    "$PYTHON" "$CTXLEAK" >"$OUT/ctxleak.json"
    local rc=$?
    "$PYTHON" "$CTXLEAK" --repair >"$OUT/ctxleak-repair.json"
    cat "$OUT/ctxleak.json" "$OUT/ctxleak-repair.json"
    return $rc
}
export -f setup facts checks cuda_tests ctxleak
export PYTHON CTXLEAK CARRY

# Budgets add up to more than 450 s: a quick step leaves its unused time to the later ones.
step setup          45 setup
step facts          15 facts
step ctxleak        25 ctxleak
step context        30 checks context
step context-tests  40 cuda_tests context-tests tests/platform/test_gpu_context.py tests/platform/test_gpu_probe.py
step nvdec          40 checks nvdec
step nvdec-tests    60 cuda_tests nvdec-tests tests/sources/test_nvdec.py
step clips          40 checks clips
step network        70 checks network
step decode         60 checks decode
step end_to_end     90 checks end_to_end
step x264           35 checks x264
step fidelity       40 checks fidelity
echo "=== session: $(($(date +%s) - session_start)) s; results in $OUT (steps.tsv, <step>.json, <step>.log)" | tee -a "$LOG"
column -t -s "$(printf '\t')" "$SUMMARY" 2>/dev/null | tee -a "$LOG" || cat "$SUMMARY"
