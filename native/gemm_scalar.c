/*
 * Portable GEMM building blocks (no ISA flags): plain C packers and a 4xNR micro-kernel written so
 * that GCC vectorises the column loop with the baseline vector ISA (SSE2 on x86-64, NEON on arm64).
 * This is the fallback on CPUs without AVX2/FMA and the arm64 path.
 */
#include "sy.h"
#include "gemm_portable.h"

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
  sy_pack_a_portable(MR, trans, a, lda, mc, kc, ap);
}

static void pack_b(int trans, const float *b, int64_t ldb, int kc, int nc, float *bp) {
  for (int q = 0; q < nc; q += NR) {
    int nr = nc - q < NR ? nc - q : NR;
    float *dst = bp + (int64_t)q * kc;
    sy_pack_b_panel_portable(NR, trans, b, ldb, kc, q, nr, dst);
  }
}

static void micro(int64_t kc, const float *SY_RESTRICT ap, const float *SY_RESTRICT bp, float *c,
                  int64_t ldc, int mr, int nr, int acc, sy_prefetch *pf) {
  (void)pf; /* no prefetching: the portable kernel is not where speed is measured */
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
  sy_store_tile(NR, &t[0][0], mr, nr, c, ldc, acc);
}

const sy_gemm_isa sy_gemm_isa_scalar = {
    "scalar", MR, NR, KC, MC, pack_a, pack_b, micro,
};
