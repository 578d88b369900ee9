#!/usr/bin/env bash
# bash benchmarks/gpu_run.sh OUT_DIR                     # on one CUDA GPU: issue 29's figures (~8 min)
# PYTHON=.venv/bin/python WHEELS=none bash benchmarks/gpu_run.sh OUT_DIR --device cpu --tiny
#                                                       # smoke run of the same steps here (~1 min)
#
# Everything the GPU figures need, in one call on a machine that has torch (CUDA) but not the rest of
# pepo's dependencies and no package index: wheels in .whl/ (downloaded on a machine that has an index,
# carried with the tree) are installed into a temporary folder first. Then,
# each with its own time limit so that a slow step still leaves the others' files:
#   1. gpu_check.py: perception prior and token_entropy tables  -> OUT_DIR/gpu_check_kernels.{json,log}
#   2. gpu_check.py: the policy update table (rho vs GRPO, A/A)  -> OUT_DIR/gpu_check_update.{json,log}
#   3. gpu_train.py: 3-step pepo train, GRPO / PEPO_G / GRPO     -> OUT_DIR/train.{json,log}
# Only when $STEPS names them (not by default):
#   4. bench_step.py --update-only --profile on CUDA: where PEPO's extra update time goes -> OUT_DIR/bench_step_profile.*
#   5. bench_families.py: the RL step per model family, speed-ups on / off  -> OUT_DIR/bench_families.{md,json}
# and, started first, in the background on cores of their own (one torch thread each: the machine's idle
# CPUs, not its GPU), the CPU tables of issue 25:
#   6. bench_step.py --update-only --compare 77436cb: PEPO's own cost then and now -> OUT_DIR/bench_step_compare_*
#   7. bench_step.py: the one-step table with the rollout, A/A control included      -> OUT_DIR/bench_step.*
# and OUT_DIR/env.txt (GPU, versions). $PEPO_BENCH_COMMIT names the commit where the copy has no .git;
# $STEPS names the steps to run (default: gpu_check_kernels gpu_check_update train).
set -u
out=${1:?usage: bash benchmarks/gpu_run.sh OUT_DIR [--device cpu --tiny]}
shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
wheels=${WHEELS:-.whl}  # none: use the Python's own packages (the smoke run here)
if [ "$wheels" != none ] && compgen -G "$wheels/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl || exit 2
  export PYTHONPATH="$site:$PWD/src"
else
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
{
  date -u
  echo "commit: ${PEPO_BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
  grep -m1 "model name" /proc/cpuinfo; echo "CPU cores: $(nproc)"
  "$py" -c "import sys, importlib.metadata as m; print(sys.version.split()[0]); print(*(f'{n} {m.version(n)}' for n in ('torch', 'transformers', 'trl', 'accelerate', 'datasets', 'pyarrow', 'fsspec', 'huggingface_hub', 'tokenizers')), sep='\n')"
} >"$out/env.txt" 2>&1
cat "$out/env.txt"
steps=" ${STEPS:-gpu_check_kernels gpu_check_update train} "
background_step() {  # background_step NAME LIMIT_S CORE COMMAND...: as step, on CPU core CORE, not waited for here
  local name=$1 limit=$2 core=$3
  [[ $steps == *" $name "* ]] || return 0
  shift 3
  local pin=()
  command -v taskset >/dev/null && [ "$(nproc)" -gt "$core" ] && pin=(taskset -c "$core")
  (
    started=$SECONDS
    timeout "$limit" "${pin[@]}" "$@" >"$out/$name.log" 2>&1
    echo "$name: exit $? in $((SECONDS - started)) s (limit $limit s, core $core)" >>"$out/$name.log"
  ) &
}
# shellcheck disable=SC2086  # BENCH_STEP_ARGS: more options for both (the smoke run: --quick)
background_step bench_step_compare "${COMPARE_LIMIT:-540}" 4 "$py" benchmarks/bench_step.py --update-only \
  --reps "${COMPARE_REPS:-7}" --compare 77436cb --methods none,pepo,none_control ${BENCH_STEP_ARGS:-} \
  --out "$out/bench_step_compare_77436cb_update_only"
# shellcheck disable=SC2086
background_step bench_step "${HEADLINE_LIMIT:-540}" 8 "$py" benchmarks/bench_step.py --reps "${HEADLINE_REPS:-4}" \
  --methods none,pepo,none_control ${BENCH_STEP_ARGS:-} --out "$out/bench_step"
step() {  # step NAME LIMIT_S COMMAND...: its output in OUT_DIR/NAME.log, its exit status at the end
  local name=$1 limit=$2
  [[ $steps == *" $name "* ]] || return 0
  shift 2
  local started=$SECONDS pin=()
  # off the background steps' cores, where the machine has them
  command -v taskset >/dev/null && [ "$(nproc)" -ge 16 ] && pin=(taskset -c 0-3,10-15)
  timeout "$limit" "${pin[@]}" "$@" >"$out/$name.log" 2>&1
  local code=$?
  echo "$name: exit $code in $((SECONDS - started)) s (limit $limit s)" | tee -a "$out/$name.log"
  tail -n 25 "$out/$name.log"
}
step gpu_check_kernels "${KERNELS_LIMIT:-170}" "$py" benchmarks/gpu_check.py "$@" --skip update --out "$out/gpu_check_kernels.json"
step gpu_check_update "${UPDATE_LIMIT:-170}" "$py" benchmarks/gpu_check.py "$@" --skip perception entropy --out "$out/gpu_check_update.json"
step train "${TRAIN_LIMIT:-200}" "$py" benchmarks/gpu_train.py "$@" --out "$out/train.json"
# the update of gpu_check_update's model (36 layers x hidden 2048) once more, each method's update then profiled
# shellcheck disable=SC2086  # PROFILE_ARGS: its size options (default: gpu_check's update size, on CUDA)
step bench_step_profile "${PROFILE_LIMIT:-200}" "$py" benchmarks/bench_step.py --update-only --profile \
  --methods none,pepo,none_control ${PROFILE_ARGS:---device cuda --layers 36 --hidden 2048 --image-size 448 --completion 640 --generations 8 --reps 5} \
  --out "$out/bench_step_profile"
# shellcheck disable=SC2086  # FAMILIES_ARGS: its own options (default: all families on CUDA in bf16)
step bench_families "${FAMILIES_LIMIT:-240}" "$py" benchmarks/bench_families.py ${FAMILIES_ARGS:---device cuda --dtype bfloat16 --reps 3} \
  --out "$out/bench_families"
wait  # the background CPU tables
for name in bench_step_compare bench_step; do
  [[ $steps == *" $name "* ]] && tail -n 25 "$out/$name.log"
done
exit 0
