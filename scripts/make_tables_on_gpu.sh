#!/usr/bin/env bash
# Make shipped tables on a borrowed GPU machine that has PyTorch but no network and no .git.
#
#   BADSAD_COMMIT=$(git rev-parse HEAD) DEADLINE=530 OUT=out scripts/make_tables_on_gpu.sh 15 deepsad_table1 mnist_seeds
#
# Unpacks the datasets carried beside the code (.gpudata/data.tar.xz: MNIST, Fashion-MNIST and the CIFAR-10
# subset in torchvision's layout, made with `tar cJf .gpudata/data.tar.xz data/...` from the folder holding
# data/), runs a one-epoch smoke test of every dataset on the GPU (so a broken CUDA path fails in seconds), then
# `badsad tables NAMES --jobs JOBS`, whose named tables share one pool of JOBS worker processes on the one GPU.
# At DEADLINE seconds the run is stopped; finished cells are kept either way. Everything that must come back
# lands in $OUT: log.txt, results.tgz (the tables' CSVs and MANIFEST.json) and cells.tgz (every finished cell's
# JSON; copy it into a --work folder and `badsad tables NAME` resumes from it anywhere).
set -u
jobs=$1; shift
out=${OUT:-$PWD/tables_out}
work=${WORK:-/tmp/badsad_work}
mkdir -p "$out" "$work" /tmp/badsad_data
exec > >(tee "$out/log.txt") 2>&1
export BADSAD_DATA=/tmp/badsad_data/data PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
python=$(command -v python3)
echo "commit ${BADSAD_COMMIT:-unknown}; $(date -Is)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
tar xJf .gpudata/data.tar.xz -C /tmp/badsad_data || exit 3
SMOKE=${SMOKE:-mnist fmnist cifar10} $python - <<'EOF' || exit 4
import os, time, tempfile, torch, sklearn, numpy
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "sklearn", sklearn.__version__, "numpy", numpy.__version__)
from badsad_lib.grid import make_specs, run_grid
from badsad_lib.settings import QUICK
smoke = QUICK.replace(epochs=1, ae_epochs=1)
t = time.perf_counter()
with tempfile.TemporaryDirectory() as d:
    for r in run_grid(make_specs(os.environ["SMOKE"].split(), [0], [0], ["naive", "badsad"], settings=smoke), d,
                      progress=False):
        print("smoke", r["dataset"], r["method"], r["device"], "clean AUC %.3f backdoored AUC %.3f %.1f s" % (r["auc_clean_model"], r["auc_backdoored"], r["seconds"]))
print("smoke test %.1f s" % (time.perf_counter() - t))
EOF
start=$(date +%s)
(while sleep 60; do echo "$(( $(date +%s) - start )) s: $(ls "$work"/*/cells 2>/dev/null | grep -c '\.json$') cells finished"; done) &
ticker=$!
timeout -k 15 "${DEADLINE:-480}" $python -m badsad_lib.cli tables "$@" --jobs "$jobs" --work "$work"
echo "tables rc=$? after $(( $(date +%s) - start )) s"
kill $ticker; pkill -f multiprocessing.spawn; pkill -f badsad_lib.cli
ls "$work"/*/cells | grep -c '\.json$' | sed 's/^/finished cells: /'
tar czf "$out/cells.tgz" --exclude='*.claim' --exclude='*.pt' --exclude='*.tmp' -C "$work" .
tar czf "$out/results.tgz" -C badsad_lib/results .
