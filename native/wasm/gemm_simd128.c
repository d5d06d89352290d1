/*
 * WebAssembly SIMD128 GEMM building blocks for the shared driver (native/gemm.c): packers plus a
 * 4x16 register micro-kernel: 16 v128 accumulators, four B vectors and one broadcast A value per
 * step (V8 has 16 vector registers on x86-64, so a few values live on the stack; measured no slower
 * than native/gemm_scalar.c auto-vectorised for SIMD128, usually faster). SIMD128 has no fused
 * multiply-add, so each step is a mul and an add; every C element is accumulated in increasing k
 * within a depth block, so results are deterministic and independent of the thread count.
 */
#include "../sy.h"
#include "../gemm_portable.h"

#include <wasm_simd128.h>

#define MR 4
#define NR 16
#define KC 256
#define MC 128

static void pack_a(int trans, const float *a, int64_t lda, int mc, int kc, float *ap) {
  sy_pack_a_portable(MR, trans, a, lda, mc, kc, ap);
}

static void pack_b(int trans, const float *b, int64_t ldb, int kc, int nc, float *bp) {
  for (int q = 0; q < nc; q += NR) {
    int nr = nc - q < NR ? nc - q : NR;
    float *dst = bp + (int64_t)q * kc;
    if (!trans && nr == NR) {
      for (int l = 0; l < kc; l++) {
        const float *src = b + (int64_t)l * ldb + q;
        for (int v = 0; v < NR; v += 4) wasm_v128_store(dst + l * NR + v, wasm_v128_load(src + v));
      }
      continue;
    }
    sy_pack_b_panel_portable(NR, trans, b, ldb, kc, q, nr, dst);
  }
}

#define ROW(i)                                                    \
  do {                                                            \
    v128_t av = wasm_f32x4_splat(ap[i]);                          \
    c##i##0 = wasm_f32x4_add(c##i##0, wasm_f32x4_mul(av, b0));    \
    c##i##1 = wasm_f32x4_add(c##i##1, wasm_f32x4_mul(av, b1));    \
    c##i##2 = wasm_f32x4_add(c##i##2, wasm_f32x4_mul(av, b2));    \
    c##i##3 = wasm_f32x4_add(c##i##3, wasm_f32x4_mul(av, b3));    \
  } while (0)

static void micro(int64_t kc, const float *SY_RESTRICT ap, const float *SY_RESTRICT bp, float *c, int64_t ldc,
                  int mr, int nr, int acc, sy_prefetch *pf) {
  (void)pf; /* wasm has no prefetch instruction */
  v128_t z = wasm_f32x4_splat(0.0f);
  v128_t c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
  v128_t c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
  for (int64_t l = 0; l < kc; l++) {
    v128_t b0 = wasm_v128_load(bp), b1 = wasm_v128_load(bp + 4), b2 = wasm_v128_load(bp + 8), b3 = wasm_v128_load(bp + 12);
    ROW(0);
    ROW(1);
    ROW(2);
    ROW(3);
    ap += MR;
    bp += NR;
  }
  v128_t t[MR][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}, {c30, c31, c32, c33}};
  if (nr == NR) {
    for (int i = 0; i < mr; i++) {
      float *cr = c + (int64_t)i * ldc;
      for (int v = 0; v < 4; v++) {
        v128_t x = t[i][v];
        if (acc == 1) x = wasm_f32x4_add(wasm_v128_load(cr + 4 * v), x);
        wasm_v128_store(cr + 4 * v, x);
      }
    }
    return;
  }
  float tmp[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < 4; v++) wasm_v128_store(&tmp[i][4 * v], t[i][v]);
  sy_store_tile(NR, &tmp[0][0], mr, nr, c, ldc, acc);
}

const sy_gemm_isa sy_gemm_isa_simd128 = {
    "simd128", MR, NR, KC, MC, pack_a, pack_b, micro,
};
