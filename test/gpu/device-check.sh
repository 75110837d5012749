#!/usr/bin/env bash
# The GPU check of the CUDA backend, as one prepared script for a machine with an NVIDIA GPU (such as the
# lent H200): builds the CUDA variant from this tree, runs the backend-consistency suite (every kernel
# against its CPU reference, whole models GPU vs CPU) and the GPU benchmark, and prints a summary.
#
#   bash test/gpu/device-check.sh [--quick]        (--quick: kernel tests only)
#
# Needs nvcc, cmake, ninja (or make) and g++. The JavaScript parts (the whole-model suite test/gpu/*.test.ts
# and `bench/run.mjs --gpu` against node-llama-cpp's CUDA build) also need node >= 20 and this tree's
# node_modules; where they are missing (the lent machine has no Node.js) those parts say so and count as
# skipped. Whole-model GPU-vs-CPU checks that need no Node.js run from the GGUF fixtures in
# test/gpu/fixtures/ when present (made here by `node scripts/gpu-fixtures.mjs`; carry that folder).
# Budget: under 8 minutes on one H200 (the build is for the local GPU's architecture only).
set -uo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS
results=()
failed=0
note() { printf '\n=== %s (%ss)\n' "$*" "$((SECONDS - started))"; }
record() {  # name status
  results+=("$1: $2")
  [ "$2" = failed ] && failed=1
  return 0
}

note "device"
if ! nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader; then
  echo "no NVIDIA GPU answers nvidia-smi: nothing to check here"
  exit 2
fi
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
jobs=$(nproc)

note "build: CUDA kernels and their tests (sm_${arch}, -j${jobs})"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
build=build-device-check
if cmake -S . -B "$build" "${generator[@]}" -DNODE_MOE_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
     -DCMAKE_CUDA_ARCHITECTURES="${arch}-real" >"$build.log" 2>&1 &&
   cmake --build "$build" --parallel "$jobs" >>"$build.log" 2>&1; then
  record build passed
else
  tail -40 "$build.log"
  record build failed
  printf '\n%s\n' "${results[@]}"
  exit 1
fi

note "backend-consistency: kernel tests"
for t in "$build"/test_cuda_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  if timeout 300 "$t"; then record "$name" passed; else record "$name" failed; fi
done

if [ "${1:-}" != "--quick" ]; then
  note "whole models from fixtures (no Node.js needed)"
  if [ -x "$build/test_cuda_model" ] && [ -d test/gpu/fixtures ]; then
    if timeout 300 "$build/test_cuda_model" test/gpu/fixtures; then record test_cuda_model passed; else record test_cuda_model failed; fi
  else
    echo "no test/gpu/fixtures (make them with: node scripts/gpu-fixtures.mjs) or no test_cuda_model program"
    record "whole models (fixtures)" skipped
  fi

  if command -v node >/dev/null 2>&1 && [ -d node_modules/vitest ]; then
    note "addon: CUDA variant (cmake-js) and TypeScript"
    if npm run build:cuda -- --CDCMAKE_CUDA_ARCHITECTURES="${arch}-real" --parallel "$jobs" >"$build.addon.log" 2>&1 &&
       npm run build:ts >>"$build.addon.log" 2>&1; then
      record "addon build" passed
      note "whole models GPU vs CPU (vitest test/gpu)"
      if NODE_MOE_BINDING=build-cuda/Release/node_moe.node timeout 600 npx vitest run test/gpu; then
        record "vitest test/gpu" passed
      else
        record "vitest test/gpu" failed
      fi
      note "benchmark: node-moe vs llama.cpp, both on CUDA"
      if NODE_MOE_BINDING=build-cuda/Release/node_moe.node timeout 420 node bench/run.mjs --gpu --runs 1 --skip-8k \
           --skip-tokenizers --json "$build/bench-gpu.json"; then
        record "bench --gpu" passed
      else
        record "bench --gpu" failed
      fi
    else
      tail -40 "$build.addon.log"
      record "addon build" failed
    fi
  else
    echo "node >= 20 with node_modules is not available here: the JavaScript suite and bench are skipped"
    record "vitest test/gpu + bench --gpu" skipped
  fi
fi

note "summary"
printf '%s\n' "${results[@]}"
exit $failed
