#!/usr/bin/env bash
# The full permuted-MNIST reproduction in one call on a lent GPU machine (bench/reproduce.py --full).
# Needs .gpu/ (bench/gpu_bundle.sh) carried along; writes the study to $OUT/reproductions and the log to
# $OUT/reproduce.log. From the session, with the device tool:
#   run(command="bash bench/gpu_reproduce.sh", carry=[".gpu"], timeout_s=600)
# then copy the returned reproductions/ folder to results/reproductions/ and commit it.
# Extra arguments go to reproduce.py (e.g. --methods ewc lwf, --precision bfloat16); REPRO_MODE=--smoke
# runs the CPU-sized path instead (a check of this script without a GPU: add --device cpu).
set -euo pipefail
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg CLBENCH_OFFLINE=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
# clbench from this tree, laid out as setup.cfg's package_dir maps it (no build step, no build tools needed)
rm -rf /tmp/clb && mkdir -p /tmp/clb && cp -r clbench /tmp/clb/clbench
for p in benchmarks strategies protocols reports; do cp -r "$p" "/tmp/clb/clbench/$p"; done
export PYTHONPATH=/tmp/clb:/tmp/site:$PWD/.gpu/stubs
mkdir -p /tmp/data/MNIST/raw
for f in .gpu/data/*.gz; do gunzip -c "$f" > "/tmp/data/MNIST/raw/$(basename "$f" .gz)"; done
export CLBENCH_DATA=/tmp/data
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "setup $(( $(date +%s) - t0 )) s"
# stop before the tool's 600 s limit; finished jobs are already written to $out/reproductions
timeout --signal=INT 570 python3 bench/reproduce.py ${REPRO_MODE:---full} --device cuda --jobs 14 --runs /tmp/runs \
  --out "$out/reproductions" "$@" 2>&1 | tee "$out/reproduce.log"
