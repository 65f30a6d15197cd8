#!/usr/bin/env bash
# One short check on a machine with an NVIDIA GPU (docs/families.md, "On an accelerator").
#
#   scripts/gpu_check.sh [OUTDIR]      # OUTDIR defaults to $OUT, else runs/gpu-check
#
# 1. The default test suite on that machine's CPU cores and JAX version, in the background
#    (JAX_PLATFORMS=cpu, with pytest-xdist, which that machine's image has), while
# 2. a probe of the `paper` preset on halfcheetah-vel runs every stage on the GPU at reduced step
#    counts; its progress lines give each stage's steps/s at the paper's network sizes, from which
#    docs/families.md estimates a full paper-preset run, and
# 3. benchmarks/bench.py at the paper's BCQ sizes (teacher updates/s, vmap vs lax.map vs a loop).
# Wheels for packages the machine lacks (mujoco, gymnasium, tyro, tensorboardX) are installed from
# .whl/ when that folder holds any. Small logs and timings land in OUTDIR; the probe's run folder
# is kept out of it (its datasets are large) and is started afresh each time.
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

# 2. paper preset, every stage, reduced step counts
probe=${PROBE_DIR:-runs/gpu-probe}
rm -rf "$probe"
start=$(date +%s)
timeout "${PROBE_TIMEOUT:-330}" python3 -m mbml.cli run --family "${PROBE_FAMILY:-halfcheetah-vel}" --preset "${PROBE_PRESET:-paper}" \
  --methods full --seeds 0 --quiet --out "$probe" \
  --set ${PROBE_SET:-sac.total_steps=3000 sac.warmup_steps=1000 bcq.steps=1200 bcq.eval_every=1200 bcq.dataset_size=3000 \
        ensemble.steps=1200 distill.steps=800 distill.eval_every=800} > "$out/probe.log" 2>&1
echo "probe exit $? after $(( $(date +%s) - start )) s" >> "$out/probe.log"
cp "$probe/seed_0/timings.json" "$out/probe-timings.json" 2>/dev/null
cp "$probe/run.json" "$out/probe-run.json" 2>/dev/null

# 3. BCQ teachers at the paper's sizes
timeout "${BENCH_TIMEOUT:-90}" python3 benchmarks/bench.py --preset paper --steps 200 > "$out/bench.log" 2>&1
echo "bench exit $?" >> "$out/bench.log"

wait $tests
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null
for f in probe.log bench.log; do echo "=== $f"; tail -n 40 "$out/$f"; done
echo "=== tests.log"; tail -n 15 "$out/tests.log"
