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
#   families (only when $STEPS names it; CUDA, bf16): bench_families.py, every tiny family's RL step with
#      the speed-ups on vs off, 3 reps -> OUT_DIR/bench_families.{json,md}, OUT_DIR/families.log
# and OUT_DIR/env.txt (GPU, versions). $PEPO_BENCH_COMMIT names the commit where the copy has no .git;
# $STEPS names the steps to run (default all three: gpu_check_kernels gpu_check_update train).
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
  "$py" -c "import sys, importlib.metadata as m; print(sys.version.split()[0]); print(*(f'{n} {m.version(n)}' for n in ('torch', 'transformers', 'trl', 'accelerate', 'datasets', 'pyarrow', 'fsspec', 'huggingface_hub', 'tokenizers')), sep='\n')"
} >"$out/env.txt" 2>&1
cat "$out/env.txt"
steps=" ${STEPS:-gpu_check_kernels gpu_check_update train} "
step() {  # step NAME LIMIT_S COMMAND...: its output in OUT_DIR/NAME.log, its exit status at the end
  local name=$1 limit=$2
  [[ $steps == *" $name "* ]] || return 0
  shift 2
  local started=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local code=$?
  echo "$name: exit $code in $((SECONDS - started)) s (limit $limit s)" | tee -a "$out/$name.log"
  tail -n 25 "$out/$name.log"
}
step gpu_check_kernels "${KERNELS_LIMIT:-170}" "$py" benchmarks/gpu_check.py "$@" --skip update --out "$out/gpu_check_kernels.json"
step gpu_check_update "${UPDATE_LIMIT:-170}" "$py" benchmarks/gpu_check.py "$@" --skip perception entropy --out "$out/gpu_check_update.json"
step train "${TRAIN_LIMIT:-200}" "$py" benchmarks/gpu_train.py "$@" --out "$out/train.json"
step families "${FAMILIES_LIMIT:-540}" "$py" benchmarks/bench_families.py --device cuda --dtype bfloat16 --reps 3 --out "$out/bench_families"
