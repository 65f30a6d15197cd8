#!/usr/bin/env bash
# One short check (under 10 minutes) on a machine with an NVIDIA GPU (docs/families.md, "On an accelerator").
#
#   scripts/gpu_check.sh [OUTDIR]      # OUTDIR defaults to $OUT, else runs/gpu-check
#
# 1. The default test suite on that machine's CPU cores and JAX version, in the background
#    (JAX_PLATFORMS=cpu, with pytest-xdist, which that machine's image has), while
# 2. benchmarks/paper_estimate.py times every stage of the `paper` preset on the GPU at reduced
#    step counts, twice (N and 2N steps per learner), for halfcheetah-vel and humanoid-dir, and
#    extrapolates the full `paper` run's wall time per stage (OUTDIR/FAMILY.json; the README quotes
#    them with their date), and
# 3. benchmarks/bench.py at the paper's BCQ sizes (teacher updates/s, vmap vs lax.map vs a loop).
# Wheels for packages the machine lacks (mujoco, gymnasium, tyro, tensorboardX) are installed from
# .whl/ when that folder holds any. Small logs and the estimates land in OUTDIR; the probes' run
# folders are kept out of it (their datasets are large) and are started afresh each time.
set -u
out=${1:-${OUT:-runs/gpu-check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
if ls .whl/*.whl >/dev/null 2>&1 && [ -z "${SKIP_WHEELS:-}" ]; then
  site="$PWD/${SITE_DIR:-runs/gpu-check-site}"  # under the repo (runs/ is git-ignored)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH=$site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
python3 -c "import jax, flax, optax, mujoco, gymnasium, tyro, mbml; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'mujoco', mujoco.__version__, jax.devices())" || exit 1

# 1. tests on the CPU cores, beside the GPU work
(JAX_PLATFORMS=cpu timeout "${TEST_TIMEOUT:-400}" python3 -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-6}" \
   > "$out/tests.log" 2>&1; echo "tests exit $?" >> "$out/tests.log") &
tests=$!

# 2. paper preset, every stage, reduced step counts, two lengths: the full run's wall time per family
probe=${PROBE_DIR:-runs/gpu-probe}
rm -rf "$probe"
for family in ${PROBE_FAMILIES:-halfcheetah-vel humanoid-dir}; do
  start=$(date +%s)
  timeout "${PROBE_TIMEOUT:-200}" python3 benchmarks/paper_estimate.py --family "$family" --steps "${PROBE_STEPS:-400}" \
    --out "$probe" > "$out/estimate-$family.log" 2>&1
  echo "estimate exit $? after $(( $(date +%s) - start )) s" >> "$out/estimate-$family.log"
  cp "$probe/$family.json" "$out/" 2>/dev/null
done

# 3. BCQ teachers at the paper's sizes
timeout "${BENCH_TIMEOUT:-90}" python3 benchmarks/bench.py --preset paper --steps 200 > "$out/bench.log" 2>&1
echo "bench exit $?" >> "$out/bench.log"

wait $tests
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null
for f in "$out"/estimate-*.log "$out/bench.log"; do echo "=== $f"; tail -n 14 "$f"; done
echo "=== tests.log"; tail -n 15 "$out/tests.log"
