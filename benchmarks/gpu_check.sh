#!/usr/bin/env bash
# One call on a lent GPU machine (its own JAX, flax and CUDA PyTorch; nothing installed): versions,
# a smoke check against NumPy, the forms of tiling sums (xla_tiling_sums.py), the breadth table on the
# GPU, then the op suites on the GPU.
# Writes under $OUT (default /tmp/jaxpool_gpu): env.txt, smoke.txt, tiling_sums.txt, bench.log,
# RESULTS_breadth_gpu.md, tests.log. Time caps (FORMS_S, BENCH_S, TESTS_S seconds; 60 + 270 + 150 by
# default) keep the whole call under 9 minutes; BENCH_ARGS passes more options to bench_breadth.py (e.g. "--skip 23" to resume).
#
#     bash benchmarks/gpu_check.sh [ROUNDS] [BATCH_SCALE] [TESTS...]
set -u
OUT=${OUT:-/tmp/jaxpool_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY=${PY:-python3}
ROUNDS=${1:-10}
SCALE=${2:-1}
shift 2 2>/dev/null
TESTS=${*:-tests/test_max.py tests/test_avg.py tests/test_adaptive.py tests/test_torch_parity.py tests/test_transformations.py tests/test_edge_semantics.py tests/test_stochastic.py}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/env.txt"
$PY -c "import jax, flax, torch, numpy; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__)" 2>&1 | tee -a "$OUT/env.txt"

$PY - <<'EOF' 2>&1 | tee "$OUT/smoke.txt"
import jax, numpy as np
import jaxpool
from tests import reference
x = np.random.default_rng(0).standard_normal((2, 9, 9, 3)).astype(np.float32)
y = jaxpool.max_pool(x, (3, 3), 2, 1)
ref, _ = reference.max_pool(x.transpose(0, 3, 1, 2), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), False)
print("backend", jax.default_backend(), "max_pool 3x3/2 p1 equal to NumPy:", np.array_equal(np.asarray(y), ref.transpose(0, 2, 3, 1)))
g = jax.grad(lambda v: jaxpool.max_pool(v, (3, 3), 2, 1).sum())(x)
print("gradient sums to the output count:", float(g.sum()), "==", y.size)
EOF

# which form of a tiling window sum this backend runs fastest (avg 2x2/2 ran 1.39x flax on an H100)
timeout -s INT "${FORMS_S:-60}" $PY benchmarks/xla_tiling_sums.py --rounds 5 --calls 10 --batch-scale "$SCALE" 2>&1 | tee "$OUT/tiling_sums.txt"

timeout -s INT "${BENCH_S:-270}" $PY benchmarks/bench_breadth.py --gpu --rounds "$ROUNDS" --calls 10 --batch-scale "$SCALE" ${BENCH_ARGS:-} --out "$OUT/RESULTS_breadth_gpu.md" 2>&1 | tee "$OUT/bench.log" | grep -v ' \.\.\.$' | grep -v '^|' | tail -5

# -v streams every result line; the cap's SIGINT makes pytest print the failures so far with their
# tracebacks (a plain timeout's SIGTERM left only their names)
CI=true timeout -s INT -k 30 "${TESTS_S:-150}" $PY -m pytest -v -n 12 -p no:cacheprovider -p no:benchmark --tb=short $TESTS > "$OUT/tests.log" 2>&1
grep -E "FAILED|ERROR|passed|failed" "$OUT/tests.log" | grep -v "^\[gw.*PASSED" | tail -20
