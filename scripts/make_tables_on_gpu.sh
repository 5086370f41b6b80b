#!/usr/bin/env bash
# One lent GPU session in one command, on a machine that has PyTorch but no network and no .git: the GPU
# tests, then the speed benchmarks, then as many pending tables as fit before the deadline.
#
#   BADSAD_COMMIT=$(git rev-parse HEAD) DEADLINE=540 OUT=out scripts/make_tables_on_gpu.sh 16 mnist_paper_attack_all ...
#
# Stages, each capped so that a broken one cannot eat the session (a stage that fails or runs out of time is
# logged and the next one starts; set a stage's seconds to 0 to skip it):
#   data    unpacks .gpudata/data.tar.xz (MNIST, Fashion-MNIST and the CIFAR-10 subset in torchvision's layout,
#           made with `tar cJf .gpudata/data.tar.xz data/...` from the folder holding data/), unless BADSAD_DATA
#           already names a folder
#   tests   (TESTS_S, 120 s) pytest on the test files that need only torch and scikit-learn, the GPU being every
#           model's default device there; tests.txt
#   smoke   a one-epoch grid of every dataset in SMOKE on the device, so a broken CUDA path fails in seconds
#   bench   (BENCH_S, 240 s: 35% of it, 30% and the rest) bench_deepsad.py (epoch times, a quick model and attack,
#           the demo), one MNIST model at the paper's settings timed whole, and bench_stack.py for K = STACK_KS
#           (1 4 16 64) with STACK_AUC (8) paired AUCs; bench.txt
#   tables  `badsad tables NAMES --jobs JOBS`, whose named tables share one pool of JOBS workers, until DEADLINE
#           seconds after this script started; finished cells are kept either way
# Everything that must come back lands in $OUT: log.txt, tests.txt, bench.txt, results.tgz (the tables' CSVs and
# MANIFEST.json) and cells.tgz (every finished cell's JSON; copy it into a --work folder and `badsad tables NAME`
# resumes from it anywhere).
set -u
jobs=$1; shift
out=${OUT:-$PWD/tables_out}
work=${WORK:-/tmp/badsad_work}
started=$(date +%s)
mkdir -p "$out" "$work"
exec > >(tee "$out/log.txt") 2>&1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
python=$(command -v python3)
elapsed() { echo $(( $(date +%s) - started )); }
stage() { echo; echo "=== $1 at $(elapsed) s"; }
echo "commit ${BADSAD_COMMIT:-unknown}; $(date -Is)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

stage data
if [ -z "${BADSAD_DATA:-}" ]; then
  mkdir -p /tmp/badsad_data && tar xJf .gpudata/data.tar.xz -C /tmp/badsad_data || exit 3
  export BADSAD_DATA=/tmp/badsad_data/data
fi
echo "BADSAD_DATA=$BADSAD_DATA"

if [ "${TESTS_S:-120}" != 0 ]; then
  stage tests
  timeout -k 10 "${TESTS_S:-120}" $python -m pytest -o addopts="" -p no:cacheprovider -q -rfE -n "${TEST_JOBS:-8}" \
    tests/test_deepsad.py tests/test_fast_paths.py tests/test_polyphase.py tests/test_stacked.py tests/test_attack.py \
    > "$out/tests.txt" 2>&1
  echo "tests rc=$? after $(elapsed) s"; tail -n 40 "$out/tests.txt"
fi

stage smoke
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

if [ "${BENCH_S:-240}" != 0 ]; then
  stage bench
  bench=${BENCH_S:-240}
  bench_end=$(( $(date +%s) + bench ))
  left() { echo $(( bench_end - $(date +%s) > 1 ? bench_end - $(date +%s) : 1 )); }
  {  # shares of BENCH_S: 35% and 30% for the first two, what is left for the stack, so none starves the rest
    timeout -k 10 $(( bench * 35 / 100 )) $python benchmarks/bench_deepsad.py --epochs 5
    echo "bench_deepsad rc=$?"
    timeout -k 10 $(( bench * 30 / 100 )) $python - <<'EOF'
import time
from badsad_lib.deepsad import DeepSAD
from badsad_lib.experiments import split_for
from badsad_lib.metrics import auc
from badsad_lib.settings import PAPER
s = split_for("mnist", 0, labeled_ratio=0.05)
start = time.perf_counter()
model = DeepSAD("mnist", PAPER, progress=False).fit(s.x_train, s.semi_targets, X_val=s.x_val)
print("one MNIST model at the paper's settings (%d + %d epochs) on %s: %.1f s, test AUC %.4f"
      % (PAPER.ae_epochs, PAPER.epochs, model.device, time.perf_counter() - start,
         auc(model.decision_function(s.x_test), s.y_test)))
EOF
    echo "paper model rc=$?"
    timeout -k 10 "$(left)" $python benchmarks/bench_stack.py --ks ${STACK_KS:-1 4 16 64} --epochs 2 --auc "${STACK_AUC:-8}"
    echo "bench_stack rc=$?"
  } > "$out/bench.txt" 2>&1
  cat "$out/bench.txt"
fi

stage tables
remaining=$(( ${DEADLINE:-480} - $(elapsed) ))
if [ "$#" -gt 0 ] && [ "$remaining" -gt 30 ]; then
  start=$(date +%s)
  (while sleep 60; do echo "$(( $(date +%s) - start )) s: $(ls "$work"/*/cells 2>/dev/null | grep -c '\.json$') cells finished"; done) &
  ticker=$!
  timeout -k 15 "$remaining" $python -m badsad_lib.cli tables "$@" --jobs "$jobs" --work "$work"
  echo "tables rc=$? after $(( $(date +%s) - start )) s"
  kill $ticker; pkill -f multiprocessing.spawn; pkill -f badsad_lib.cli
else
  echo "no tables: $# named, $remaining s left before DEADLINE"
fi
ls "$work"/*/cells 2>/dev/null | grep -c '\.json$' | sed 's/^/finished cells: /'
tar czf "$out/cells.tgz" --exclude='*.claim' --exclude='*.pt' --exclude='*.tmp' -C "$work" .
tar czf "$out/results.tgz" -C badsad_lib/results .
echo "done at $(elapsed) s"
