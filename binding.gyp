{
  # Switchyard native backend. Per-file ISA flags are expressed as one static library per ISA
  # (gyp has no per-source cflags); the addon picks the path at run time with
  # __builtin_cpu_supports, so the binary runs on any x86-64 CPU.
  'target_defaults': {
    'cflags': [
      '-O3', '-std=c11', '-fPIC', '-pthread',
      '-ffp-contract=fast', '-fno-math-errno', '-fno-trapping-math',
      '-Wall', '-Wextra', '-Wno-unused-parameter', '-Wno-unused-function',
      '-Werror=implicit-function-declaration'
    ],
    'cflags!': ['-O2', '-fno-strict-aliasing'],
    'xcode_settings': {
      'OTHER_CFLAGS': [
        '-O3', '-std=c11', '-ffp-contract=fast', '-fno-math-errno', '-fno-trapping-math'
      ]
    }
  },
  'conditions': [
    ['target_arch=="x64"', {
      'targets': [
        {
          'target_name': 'switchyard_avx512',
          'type': 'static_library',
          'sources': ['native/gemm_avx512.c', 'native/ew_avx512.c'],
          'cflags': ['-mavx512f', '-mavx512bw', '-mavx512dq', '-mavx512vl', '-mfma', '-mavx2'],
          'xcode_settings': {
            'OTHER_CFLAGS': ['-mavx512f', '-mavx512bw', '-mavx512dq', '-mavx512vl', '-mfma', '-mavx2']
          }
        },
        {
          'target_name': 'switchyard_avx2',
          'type': 'static_library',
          'sources': ['native/gemm_avx2.c', 'native/ew_avx2.c'],
          'cflags': ['-mavx2', '-mfma'],
          'xcode_settings': { 'OTHER_CFLAGS': ['-mavx2', '-mfma'] }
        },
        {
          'target_name': 'switchyard_native',
          'sources': [
            'native/addon.c', 'native/pool.c', 'native/gemm.c', 'native/gemm_gated.c', 'native/schedule.c', 'native/ops.c', 'native/lora.c',
            'native/gemm_scalar.c', 'native/ew_scalar.c'
          ],
          'dependencies': ['switchyard_avx512', 'switchyard_avx2'],
          'libraries': ['-lm', '-pthread']
        }
      ]
    }, {
      # arm64 and others: portable C only (GCC/Clang auto-vectorise it with NEON on arm64).
      'targets': [
        {
          'target_name': 'switchyard_native',
          'sources': [
            'native/addon.c', 'native/pool.c', 'native/gemm.c', 'native/gemm_gated.c', 'native/schedule.c', 'native/ops.c', 'native/lora.c',
            'native/gemm_scalar.c', 'native/ew_scalar.c'
          ],
          'libraries': ['-lm', '-pthread']
        }
      ]
    }]
  ]
}
