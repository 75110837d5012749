#!/usr/bin/env bash
# Builds the CUDA kernels and their CPU-consistency tests with plain CMake, then runs them.
# On a machine without a GPU the test binary says "skipped: no CUDA device" and passes nothing;
# run this on a GPU machine (e.g. the lent H200) to execute the kernels.
#   bash scripts/gpu-check.sh [--build-only]
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B build-cuda-tests "${generator[@]}" -DNODE_MOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-cuda-tests --parallel "$(nproc)"
[ "${1:-}" = "--build-only" ] && exit 0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
status=0
for t in build-cuda-tests/test_*; do
  [ -x "$t" ] || continue
  echo "== $t"
  "$t" || status=1
done
exit $status
