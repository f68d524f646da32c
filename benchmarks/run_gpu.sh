#!/usr/bin/env bash
# The GPU benchmark, run once by the lead on the lent GPU from the repository root:
#
#     bash benchmarks/run_gpu.sh            # writes $OUT/gpu_results.json, $OUT/gpu_bench.log
#
# Needs only torch + transformers + peft + accelerate + tokenizers (no weights, data, hub, rouge-score
# or datasets). A rouge-score wheel under .whl/ is installed when present (not needed by gpu.py).
# Hard limit: 500 s for the Python process (sections that would end after --deadline-s are skipped,
# and the JSON is rewritten after every section, so a kill keeps what was measured).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" >/dev/null; then
    python -m pip install --no-deps --no-index .whl/*.whl >"$OUT/pip.log" 2>&1 || echo "wheel install failed (see pip.log)"
fi
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
timeout 500 python benchmarks/gpu.py --out "$OUT/gpu_results.json" --deadline-s 450 "$@" 2>&1 \
    | grep --line-buffered -v -e "Loading weights" -e "Writing model shards" | tee "$OUT/gpu_bench.log"
echo "exit=${PIPESTATUS[0]}" | tee -a "$OUT/gpu_bench.log"
