#!/usr/bin/env bash
# The GPU benchmark, run once by the lead on the lent GPU from the repository root:
#
#     bash benchmarks/run_gpu.sh            # writes $OUT/gpu_results.json, $OUT/gpu_bench.log
#
# Needs torch + transformers + peft + accelerate + tokenizers, and rouge-score for the rouge sections
# (a section without it records the error and the run goes on); no weights, data, hub or datasets.
# Wheels under .whl/ (rouge-score, nltk) are installed when present. On the lent machine of
# 2026-11-28 it ran as (with `.whl` carried):
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#     PYTHONPATH=$PWD/src:$PWD/benchmarks:/tmp/site bash benchmarks/run_gpu.sh
# taking 343 s; the sections added since (scoring shards, authors' 500-token cap, loss profile, compiled rouge,
# pipeline overhead) add an estimated 150-200 s; whatever would end after the 500 s deadline is
# skipped, last sections first (pipeline overhead is the last).
# Hard limit: 540 s for the Python process (sections that would end after --deadline-s are skipped,
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
timeout 540 python benchmarks/gpu.py --out "$OUT/gpu_results.json" --deadline-s 500 "$@" 2>&1 \
    | grep --line-buffered -v -e "Loading weights" -e "Writing model shards" | tee "$OUT/gpu_bench.log"
echo "exit=${PIPESTATUS[0]}" | tee -a "$OUT/gpu_bench.log"
