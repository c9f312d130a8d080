#!/usr/bin/env bash
# Build .gpu/ (ignored by git through .git/info/exclude): what bench/gpu_reproduce.sh needs on a lent GPU
# machine, whose image has torch, numpy, pandas, scipy, scikit-learn, matplotlib, tensorboard, torchmetrics,
# filelock, pyyaml, tqdm but no network: MNIST (gzip, 11 MB), wheels of avalanche-lib and the packages it
# imports that the image lacks (Python 3.12, about 3 MB), and an empty stand-in for wandb, which Avalanche
# imports at import time and clbench never calls. Run here, in the repository root, where PyPI is reachable.
#   CLBENCH_DATA=../shared/data bash bench/gpu_bundle.sh
set -euo pipefail
data=${CLBENCH_DATA:-../shared/data}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/whl .gpu/data .gpu/stubs/wandb
for f in "$data"/MNIST/raw/*-ubyte; do gzip -9 -c "$f" > ".gpu/data/$(basename "$f").gz"; done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  avalanche-lib==0.6.0 dill==0.4.1 gdown==6.5.1 beautifulsoup4==4.15.0 soupsieve==4.1.3 PySocks==1.7.1 \
  pytorchcv==0.0.74 qpsolvers==4.13.0 quadprog==0.1.14
python3 -m pip wheel -q --no-deps GPUtil==1.4.0 -w .gpu/whl   # published as a source archive only
cat > .gpu/stubs/wandb/__init__.py <<'STUB'
"""Empty stand-in for wandb on the GPU image, which lacks it: Avalanche imports wandb at import time
(evaluation/metrics/confusion_matrix.py) and calls it only to log to Weights & Biases, which clbench never does."""
STUB
du -sh .gpu
