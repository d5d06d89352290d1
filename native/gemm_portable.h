/*
 * Portable pieces of the per-ISA GEMM building blocks (packed layouts of sy.h) for an ISA with an
 * MR x NR register tile: the plain-C packers shared by gemm_scalar.c and wasm/gemm_simd128.c, and
 * the edge-tile store every micro-kernel uses. MR and NR are compile-time constants at every call,
 * so each includer gets loops specialised for its tile.
 */
#ifndef SWITCHYARD_GEMM_PORTABLE_H
#define SWITCHYARD_GEMM_PORTABLE_H

#include "sy.h"

/* Rows [0, mc) x depth [0, kc) of op(A) into MR-row panels, rows past mc zero. */
SY_INLINE void sy_pack_a_portable(const int MR, int trans, const float *a, int64_t lda, int mc, int kc, float *ap) {
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

/* One NR-column panel of op(B): columns [q, q + nr) x depth [0, kc) into dst, columns past nr zero. */
SY_INLINE void sy_pack_b_panel_portable(const int NR, int trans, const float *b, int64_t ldb, int kc, int q, int nr,
                                        float *dst) {
  for (int l = 0; l < kc; l++) {
    int j = 0;
    if (trans)
      for (; j < nr; j++) dst[l * NR + j] = b[(int64_t)(q + j) * ldb + l];
    else
      for (; j < nr; j++) dst[l * NR + j] = b[(int64_t)l * ldb + q + j];
    for (; j < NR; j++) dst[l * NR + j] = 0.0f;
  }
}

/* C[mr x nr] (+)= tile[mr x nr] (row stride NR): the store of a partial register tile. */
SY_INLINE void sy_store_tile(const int NR, const float *tile, int mr, int nr, float *c, int64_t ldc, int acc) {
  for (int i = 0; i < mr; i++) {
    float *cr = c + (int64_t)i * ldc;
    const float *ti = tile + (int64_t)i * NR;
    if (acc == 1)
      for (int j = 0; j < nr; j++) cr[j] = cr[j] + ti[j];
    else
      for (int j = 0; j < nr; j++) cr[j] = ti[j];
  }
}

#endif
