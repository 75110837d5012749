# The one source list of the native addon. binding.gyp includes this file; CMakeLists.txt parses
# it (see read_gypi_list there), so node-gyp, prebuildify and cmake-js always build the same code.
# One path per line, in quotes.
{
  'variables': {
    # Portable engine code, compiled for the baseline of the target architecture.
    'moe_core_sources': [
      'cpp/cpu/cpu_features.cc',
      'cpp/quant/ggml_types.cc',
      'cpp/quant/quant.cc',
      'cpp/quant/quant_ref.cc',
      'cpp/quant/quant_neon.cc',
      'cpp/quant/vec_dot.cc',
      'cpp/quant/vec_dot_ref.cc',
      'cpp/quant/vec_dot_neon.cc',
      'cpp/gguf/mapped_file.cc',
      'cpp/gguf/gguf_file.cc',
      'cpp/runtime/thread_pool.cc',
      'cpp/kernels/matmul.cc',
      'cpp/kernels/ops.cc',
      'cpp/kv/kv_cache.cc',
      'cpp/kv/prefix_cache.cc',
      'cpp/model/arch.cc',
      'cpp/model/hparams.cc',
      'cpp/model/weights.cc',
      'cpp/model/routing.cc',
      'cpp/model/forward.cc',
      'cpp/model/model.cc',
      'cpp/sampling/sampler.cc',
      'cpp/grammar/grammar.cc',
      'cpp/runtime/scheduler.cc',
      'cpp/runtime/placement.cc',
      'cpp/gpu/cuda_driver.cc',
      'cpp/gpu/select.cc',
      'cpp/gpu/backend_stub.cc',
    ],
    # Compiled with -mavx2 -mfma -mf16c; only called after cpuid says the CPU has them.
    'moe_avx2_sources': [
      'cpp/quant/quant_avx2.cc',
      'cpp/quant/vec_dot_avx2.cc',
      'cpp/kernels/ops_avx2.cc',
    ],
    # Compiled with AVX-512 F/BW/VL/DQ flags; only called after cpuid says the CPU has them.
    'moe_avx512_sources': [
      'cpp/quant/quant_avx512.cc',
      'cpp/quant/vec_dot_avx512.cc',
      'cpp/kernels/ops_avx512.cc',
    ],
    # The N-API edge: the only files that include napi.h.
    'moe_napi_sources': [
      'cpp/napi/addon.cc',
      'cpp/napi/errors.cc',
      'cpp/napi/gguf_binding.cc',
      'cpp/napi/model_binding.cc',
      'cpp/napi/quant_binding.cc',
      'cpp/napi/sampler_binding.cc',
      'cpp/napi/grammar_binding.cc',
      'cpp/napi/gpu_binding.cc',
    ],
  },
}
