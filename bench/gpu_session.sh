#!/usr/bin/env bash
# The GPU path's one device call: every figure comes back in at most 4 files (issues 10, 17).
# Prepare .gpu/ here with bench/gpu_prepare.sh (wheels, weights, clips, ctxleak.py), check
# what travels with `python bench/gpu_carry.py`, then, as the GPU session's first call:
#
#   run(command="bash bench/gpu_session.sh", carry=[".gpu"], timeout_s=480)
#
#   bash bench/gpu_session.sh [--dry-run] [--budget SECONDS] [--plan]
#     --dry-run   every step's plumbing on a CPU machine: imports checked from the checkout,
#                 GPU steps answer "no CUDA GPU", clips of a few frames, test selections
#                 collected (--collect-only) instead of run; DRY_RUN=1 does the same
#     --budget S  the whole session's seconds, setup and packing included (default 450,
#                 or $SESSION_SECONDS)
#     --plan      print the steps' budgets and their sum; exit 1 if it exceeds the budget
#
# What comes back ($OUT; the device returns at most 8 files and the last 12,000 characters
# of output): results.tgz (every step's log, JSON and junit XML, session.log, summary.txt),
# summary.txt (reads on its own: each step's exit, seconds and key figures) and steps.tsv.
# The step files are written under $WORK, outside $OUT, and packed again after every step
# (written aside, then renamed), so a call cut short still brings back every finished step.
#
# Steps, most decisive first; each has a budget in PLAN below. A step may run on into the
# time earlier steps left unused, never past the session's budget less PACK_SECONDS:
#   setup        carried wheels (PyAV), PyNvVideoCodec unpacked; `import nvpipe.kernels, rvm`
#                from the checkout (pip install -e . only if that fails)
#   facts        GPU, driver, video libraries, PyNvVideoCodec + PyAV in one process, cores
#   ctxleak      ../shared/tools/gpu/ctxleak.py as it is, then with --repair
#   context      nvpipe's own guard: every probe with cuCtxGetCurrent before/after
#   nvdec-race   the borrowed-frame race test alone, before any other NVDEC test
#   context-tests / nvdec-tests  those files' tests (their needs_cuda ones run here), no -x
#   nvdec        NVDEC's DLPack layout (NV12, P016), frame counts and timestamps vs PyAV
#   clips        the 1080p clip looped and scaled to 1080p and 4K (real content)
#   network      4K/0.125, 1080p/0.25: FP32 eager (TF32 off), FP16 frozen, FP16 graphs T=1,2,4
#   decode       NVDEC alone and with the converter, 1 and 7 sessions
#   end_to_end   null sink and CPU-encoded, NVML utilisation, busy cores; memory at 4K
#   x264         libx264 ceilings per preset at 1080p and 4K, with the thread count
#   fidelity     FP16 (graphs) vs true FP32 (TF32 off) alpha per frame
#   pipeline-tests  the CUDA cases of the tests that run on every device (conftest.DEVICES),
#                the subject selector's on CUDA against the CPU's, CuPy's labelling against
#                SciPy's
#   subject      --subject per frame on CUDA: SubjectSelector whole and in parts (pack, copy
#                to the host, tracker, upload); CuPy's labelling + copy vs SciPy's (issue 20)
# SKIP="clips x264" leaves steps out.
set -u
cd "$(dirname "$0")/.."

BUDGET=${SESSION_SECONDS:-450}
DRY_RUN=${DRY_RUN:-0}
SHOW_PLAN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
        --budget=*) BUDGET=${1#--budget=} ;;
        --plan) SHOW_PLAN=1 ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "gpu_session: unknown argument $1 (--dry-run, --budget S, --plan)" >&2; exit 2 ;;
    esac
    shift
done

# name, budget in seconds, command. The budgets and PACK_SECONDS add up to at most 450 s.
# subject's 20 s (issue 20) came from setup (35 -> 30: one wheel and a 3 MB archive), ctxleak
# (20 -> 15: two runs of a 3 KB script), decode (35 -> 30) and x264 (20 -> 15, X264_FRAMES
# 90 -> 60); a step also gets what the steps before it left unused.
PACK_SECONDS=15  # every step's packing (about 0.2 s each) and the final summary
PLAN=(
    "setup          30 setup"
    "facts          10 facts"
    "ctxleak        15 ctxleak"
    "context        20 checks context"
    "nvdec-race     25 cuda_tests nvdec-race tests/sources/test_nvdec.py::test_borrowed_frames_survive_a_slow_consumer"
    "context-tests  20 cuda_tests context-tests tests/platform/test_gpu_context.py tests/platform/test_gpu_probe.py"
    "nvdec          25 checks nvdec"
    "nvdec-tests    40 cuda_tests nvdec-tests tests/sources/test_nvdec.py tests/sinks/test_nvenc.py --deselect tests/sources/test_nvdec.py::test_borrowed_frames_survive_a_slow_consumer"
    "clips          30 checks clips"
    "network        55 checks network"
    "decode         30 checks decode"
    "end_to_end     55 checks end_to_end"
    "x264           15 checks x264"
    "fidelity       25 checks fidelity"
    "pipeline-tests 20 cuda_tests pipeline-tests tests/engine/test_gpu_pipeline.py tests/engine/test_subject.py::test_selector_on_cuda_matches_the_cpu tests/bench/test_gpu_bench.py::test_device_labeller_matches_scipy_on_cuda -k cuda"
    "subject        20 checks subject"
)

plan_total() {
    local total=$PACK_SECONDS line
    for line in "${PLAN[@]}"; do
        set -- $line
        total=$((total + $2))
    done
    echo "$total"
}

if [ "$SHOW_PLAN" = 1 ]; then
    printf 'step\tbudget\tcommand\n'
    for line in "${PLAN[@]}"; do
        set -- $line
        name=$1 seconds=$2; shift 2
        printf '%s\t%s\t%s\n' "$name" "$seconds" "$*"
    done
    printf 'packing\t%s\t\ntotal\t%s\tof %s\n' "$PACK_SECONDS" "$(plan_total)" "$BUDGET"
    [ "$(plan_total)" -le "$BUDGET" ]
    exit $?
fi

OUT=${OUT:-/tmp/nvpipe-gpu-out}
PYTHON=${PYTHON:-python3}
SKIP=${SKIP:-}
CARRY=${CARRY:-.gpu}  # what gpu_prepare.sh built (tests point it elsewhere)
case "$CARRY" in /*) ;; *) CARRY="$PWD/$CARRY" ;; esac
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/nvpipe-gpu-work.XXXXXX")}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
case "$WORK/" in "$OUT"/*) echo "gpu_session: WORK ($WORK) must lie outside OUT ($OUT)" >&2; exit 2 ;; esac
LOG="$WORK/session.log"
TSV="$WORK/steps.tsv"
: >"$LOG"
printf 'step\texit\tseconds\tlimit\tlast line\n' >"$TSV"
session_start=$(date +%s)
planned=0  # the budgets of the steps so far

summary() {  # summary.txt: reads on its own (the steps, their exits, seconds, key figures)
    local name rc seconds limit last
    {
        echo "nvpipe GPU session (bash bench/gpu_session.sh$([ "$DRY_RUN" = 1 ] && echo ' --dry-run')):" \
             "$(($(date +%s) - session_start)) s of a $BUDGET s budget; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
        grep -h '^KEY gpu' "$WORK"/facts.log 2>/dev/null | cut -c5-200 | head -n 3
        printf '%-14s %-7s %5s %5s  %s\n' step exit s limit "last line"
        tail -n +2 "$TSV" | while IFS=$'\t' read -r name rc seconds limit last; do
            printf '%-14s %-7s %5s %5s  %s\n' "$name" "$rc" "$seconds" "$limit" "$last"
            # A step puts a key again as it measures more: the last value of each key.
            grep -h '^KEY ' "$WORK/$name.log" 2>/dev/null | grep -v '^KEY gpu' \
                | awk '{ i = index($0, ": "); k = i ? substr($0, 1, i) : $0
                         if (!(k in v)) o[++n] = k; v[k] = $0 }
                       END { for (j = 1; j <= n; j++) print v[o[j]] }' \
                | tail -n 8 | cut -c5-220 | sed 's/^/    /'
        done
        echo "results.tgz: <step>.log, <step>.json, <step>.xml, session.log, steps.tsv, summary.txt"
    } | head -c 9000 >"$WORK/summary.txt"
}

pack() {  # results.tgz, summary.txt and steps.tsv in $OUT, each replaced whole
    summary
    cp "$TSV" "$OUT/.steps.tsv.part" && mv -f "$OUT/.steps.tsv.part" "$OUT/steps.tsv"
    cp "$WORK/summary.txt" "$OUT/.summary.txt.part" && mv -f "$OUT/.summary.txt.part" "$OUT/summary.txt"
    tar -czf "$OUT/.results.tgz.part" -C "$WORK" . 2>/dev/null \
        && mv -f "$OUT/.results.tgz.part" "$OUT/results.tgz"
}

step() {  # step NAME BUDGET COMMAND...: stdout+stderr to $WORK/NAME.log, one row in steps.tsv
    local name=$1 budget=$2 start rc left limit last elapsed
    shift 2
    planned=$((planned + budget))
    case " $SKIP " in *" $name "*)
        printf '%s\tskipped\t0\t0\tSKIP\n' "$name" >>"$TSV"; echo "=== $name: skipped" | tee -a "$LOG"
        pack; return 0;;
    esac
    elapsed=$(($(date +%s) - session_start))
    left=$((BUDGET - PACK_SECONDS - elapsed))
    limit=$((planned - elapsed))  # its budget, plus what earlier steps left unused
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 3 ]; then
        printf '%s\tskipped\t0\t0\tno time left of %s s\n' "$name" "$BUDGET" >>"$TSV"
        echo "=== $name: skipped, no time left" | tee -a "$LOG"
        pack; return 0
    fi
    echo "=== $name (limit $limit s): $*" >>"$LOG"
    start=$(date +%s)
    # bash -c: the steps may be this script's functions (exported below). --kill-after 2 s
    # after the TERM, within the limit.
    timeout --kill-after=2 "$((limit - 2))" bash -c '"$@"' "$name" "$@" >"$WORK/$name.log" 2>&1
    rc=$?
    { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && echo "timed out after $limit s" >>"$WORK/$name.log"
    last=$(grep -v '^\s*$' "$WORK/$name.log" | tail -n 1 | sed 's/^KEY //' | tr '\t' ' ' | cut -c1-160)
    sed 's/^/    /' "$WORK/$name.log" >>"$LOG"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" "$limit" "$last" >>"$TSV"
    echo "=== $name: exit $rc after $(($(date +%s) - start)) s: $last" | tee -a "$LOG"
    pack
    return 0
}

setup() {
    if [ "$DRY_RUN" != 1 ]; then
        [ -d "$CARRY/wheels" ] || { echo "setup: no $CARRY/ (run bash bench/gpu_prepare.sh here and carry .gpu)"; return 2; }
        "$PYTHON" -c "import av" 2>/dev/null || "$PYTHON" -m pip install -q --no-deps --no-index "$CARRY"/wheels/*.whl || return 1
        [ -d "$CARRY/site" ] || tar -C "$CARRY" -xJf "$CARRY/site.tar.xz" || return 1
    fi
    # What the steps import, not just `import nvpipe` (nvpipe.kernels is a link to kernels/).
    "$PYTHON" -c "import nvpipe.kernels, rvm" 2>/dev/null \
        || "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . || return 1
    "$PYTHON" -c "import nvpipe.kernels, rvm, os; print('KEY setup: nvpipe.kernels from', os.path.dirname(nvpipe.kernels.__file__))" || return 1
    echo "setup: ok"
}

facts() {
    nvidia-smi -L || echo "facts: nvidia-smi failed (no NVIDIA driver here)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null \
        | sed 's/^/KEY gpu: /'
    nvidia-smi -q -d ENCODER_STATS 2>/dev/null | head -n 12
    echo "video libraries:"; ldconfig -p 2>/dev/null | grep -E 'libnvcuvid|libnvidia-encode|libcuda\.so' || echo "  none of libnvcuvid, libnvidia-encode, libcuda found"
    echo "KEY cores: nproc $(nproc); $(lscpu 2>/dev/null | grep -E '^(Thread|Core|Socket|Model name)' | tr -s ' ' | paste -sd ';')"
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
print("KEY versions: " + ", ".join(f"{k} {v}" for k, v in facts.items())[:200])
PY
}

export PYTHONPATH="$CARRY/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NVPIPE_SHARED=${NVPIPE_SHARED:-$CARRY/shared}
[ -d "$NVPIPE_SHARED" ] || NVPIPE_SHARED="$PWD/../shared"
export NVPIPE_WEIGHTS=${NVPIPE_WEIGHTS:-$NVPIPE_SHARED/weights/rvm_mobilenetv3_bnidentity.pth}
export CLIPS=${CLIPS:-/tmp/nvpipe-clips}  # large: never under $WORK (it is packed)
if [ "$DRY_RUN" = 1 ]; then  # a few frames: the plumbing, not the figures
    export CLIP_FRAMES=${CLIP_FRAMES:-4} X264_FRAMES=${X264_FRAMES:-4} FIDELITY_FRAMES=${FIDELITY_FRAMES:-2} SUBJECT_FRAMES=${SUBJECT_FRAMES:-10}
    [ "$CLIPS" = /tmp/nvpipe-clips ] && CLIPS="$WORK/../$(basename "$WORK")-clips"
fi
CTXLEAK=$CARRY/tools/ctxleak.py
[ -f "$CTXLEAK" ] || CTXLEAK=$NVPIPE_SHARED/tools/gpu/ctxleak.py
checks() { "$PYTHON" bench/gpu_checks.py "$@" --out "$WORK"; }
cuda_tests() {  # cuda_tests NAME TEST...: every test named; on a GPU the needs_cuda ones run too
    local name=$1 rc; shift
    if [ "$DRY_RUN" = 1 ]; then  # the selection resolves (paths and test names exist)
        "$PYTHON" -m pytest -q --collect-only -p no:cacheprovider "$@"
        return $?
    fi
    # No -x: one failure must not keep the tests after it from running.
    "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs --junitxml="$WORK/$name.xml" "$@"
    rc=$?
    echo "KEY $name: $(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error)' "$WORK/$name.log" 2>/dev/null | tail -n 1 | tr -d '=')"
    return $rc
}

ctxleak() {  # as shipped, then with --repair; the exit status is the first run's
    [ -f "$CTXLEAK" ] || { echo "ctxleak: $CTXLEAK not found"; return 2; }
    "$PYTHON" "$CTXLEAK" >"$WORK/ctxleak.json"
    local rc=$?
    "$PYTHON" "$CTXLEAK" --repair >"$WORK/ctxleak-repair.json"
    cat "$WORK/ctxleak.json" "$WORK/ctxleak-repair.json"
    echo "KEY ctxleak: exit $rc; $(tr -d '\n' <"$WORK/ctxleak.json" | cut -c1-150)"
    return $rc
}
export -f setup facts checks cuda_tests ctxleak
export PYTHON CTXLEAK CARRY WORK DRY_RUN CLIPS

echo "=== session: budget $BUDGET s (plan $(plan_total) s), work in $WORK, results in $OUT$([ "$DRY_RUN" = 1 ] && echo ', DRY RUN')" | tee -a "$LOG"
for line in "${PLAN[@]}"; do
    # shellcheck disable=SC2086 - the plan's words are the step's arguments
    step $line
done
echo "=== session: $(($(date +%s) - session_start)) s" >>"$LOG"
pack
cat "$OUT/summary.txt"
