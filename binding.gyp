# node-gyp / prebuildify build of the CPU addon. The source lists live in sources.gypi, which
# CMakeLists.txt reads too. SIMD kernels sit in their own static libraries because gyp cannot set
# flags per file; they are only entered after cpu_features.cc has checked cpuid.
{
  'includes': ['sources.gypi'],
  'target_defaults': {
    'defines': ['NAPI_VERSION=9', 'NODE_ADDON_API_DISABLE_DEPRECATED', 'NAPI_CPP_EXCEPTIONS'],
    'include_dirs': ["<!(node -p \"require('node-addon-api').include_dir\")"],
    'cflags!': ['-fno-exceptions'],
    'cflags_cc!': ['-fno-exceptions', '-fno-rtti'],
    # -ffp-contract=off: no implicit FMA fusion, so SIMD kernels match their scalar references bit for bit.
    'cflags': ['-O3', '-ffp-contract=off', '-fvisibility=hidden'],
    'cflags_cc': ['-O3', '-std=c++17', '-fexceptions', '-ffp-contract=off', '-fvisibility=hidden', '-Wall', '-Wextra'],
    'xcode_settings': {
      'GCC_ENABLE_CPP_EXCEPTIONS': 'YES',
      'CLANG_CXX_LANGUAGE_STANDARD': 'c++17',
      'MACOSX_DEPLOYMENT_TARGET': '11.0',
      'OTHER_CFLAGS': ['-O3', '-ffp-contract=off'],
    },
  },
  'targets': [
    {
      'target_name': 'moe_avx2',
      'type': 'static_library',
      'sources': ['<@(moe_avx2_sources)'],
      'conditions': [
        ['target_arch=="x64"', {
          'cflags_cc': ['-mavx2', '-mfma', '-mf16c'],
          'xcode_settings': {'OTHER_CPLUSPLUSFLAGS': ['-mavx2', '-mfma', '-mf16c']},
        }],
      ],
    },
    {
      'target_name': 'moe_avx512',
      'type': 'static_library',
      'sources': ['<@(moe_avx512_sources)'],
      'conditions': [
        ['target_arch=="x64"', {
          'cflags_cc': ['-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq', '-mavx2', '-mfma', '-mf16c'],
          'xcode_settings': {'OTHER_CPLUSPLUSFLAGS': ['-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq', '-mavx2', '-mfma', '-mf16c']},
        }],
      ],
    },
    {
      'target_name': 'node_moe',
      'sources': ['<@(moe_core_sources)', '<@(moe_napi_sources)'],
      'dependencies': ['moe_avx2', 'moe_avx512'],
      'libraries': ['-lpthread'],
      'conditions': [
        # dlopen for the NVIDIA driver probe (cpp/gpu/cuda_driver.cc): part of libc from glibc 2.34,
        # a library of its own before, where prebuilds for old distributions are made.
        ['OS=="linux"', {'libraries': ['-ldl']}],
      ],
    },
  ],
}
