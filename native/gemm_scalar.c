/*
 * Portable GEMM building blocks (no ISA flags): plain C packers and a 4xNR micro-kernel written so
 * that GCC vectorises the column loop with the baseline vector ISA (SSE2 on x86-64, NEON on arm64).
 * This is the fallback on CPUs without AVX2/FMA and the arm64 path.
 */
#include "sy.h"

#include <string.h>

#define MR 4
#if defined(__aarch64__)
#define NR 16 /* 32 NEON registers: 4x16 accumulators fit */
#else
#define NR 8  /* 16 SSE registers */
#endif
#define KC 256
#define MC 128

static void pack_a(int trans, const float *a, int64_t lda, int mc, int kc, float *ap) {
  for (int p = 0; p < mc; p += MR) {
    int mr = mc - p < MR ? mc - p : MR;
    float *dst = ap + (int64_t)p * kc;
    for (int l = 0; l < kc; l++) {
      int i = 0;
      if (trans)
        for (; i < mr; i++) dst[l * MR + i] = a[(int64_t)l * lda + p + i];
      else
        for (; i < mr; i++) dst[l * MR + i] = a[(int64_t)(p + i) * lda + l];
      for (; i < MR; i++) dst[l * MR + i] = 0.0f;
    }
  }
}

static void pack_b(int trans, const float *b, int64_t ldb, int kc, int nc, float *bp) {
  for (int q = 0; q < nc; q += NR) {
    int nr = nc - q < NR ? nc - q : NR;
    float *dst = bp + (int64_t)q * kc;
    for (int l = 0; l < kc; l++) {
      int j = 0;
      if (trans)
        for (; j < nr; j++) dst[l * NR + j] = b[(int64_t)(q + j) * ldb + l];
      else
        for (; j < nr; j++) dst[l * NR + j] = b[(int64_t)l * ldb + q + j];
      for (; j < NR; j++) dst[l * NR + j] = 0.0f;
    }
  }
}

static void micro(int64_t kc, const float *SY_RESTRICT ap, const float *SY_RESTRICT bp, float *c,
                  int64_t ldc, int mr, int nr, int acc) {
  float t[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) t[i][j] = 0.0f;
  for (int64_t l = 0; l < kc; l++) {
    const float *bl = bp + l * NR;
    const float *al = ap + l * MR;
    for (int i = 0; i < MR; i++) {
      float av = al[i];
      for (int j = 0; j < NR; j++) t[i][j] += av * bl[j];
    }
  }
  for (int i = 0; i < mr; i++) {
    float *cr = c + (int64_t)i * ldc;
    if (acc)
      for (int j = 0; j < nr; j++) cr[j] = cr[j] + t[i][j];
    else
      for (int j = 0; j < nr; j++) cr[j] = t[i][j];
  }
}

const sy_gemm_isa sy_gemm_isa_scalar = {
    "scalar", MR, NR, KC, MC, pack_a, pack_b, micro,
};
