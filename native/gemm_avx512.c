/*
 * AVX-512 GEMM building blocks: 14x32 register micro-kernel (28 zmm accumulators, two B vectors,
 * A broadcast from memory) and vectorised packers (16x16 in-register transposes for the
 * transposed-B and non-transposed-A cases).
 * Compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mavx2.
 */
#include "sy.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define MR 14
#define NR 32

#ifndef SY_AVX512_KC
#define SY_AVX512_KC 512
#endif
#ifndef SY_AVX512_MC
#define SY_AVX512_MC 112
#endif

/* In-place transpose of 16 rows of 16 floats. */
SY_INLINE void tr16x16(__m512 r[16]) {
  __m512 t[16];
  for (int g = 0; g < 4; g++) {
    __m512 a = r[4 * g], b = r[4 * g + 1], c = r[4 * g + 2], d = r[4 * g + 3];
    __m512 t0 = _mm512_unpacklo_ps(a, b), t1 = _mm512_unpackhi_ps(a, b);
    __m512 t2 = _mm512_unpacklo_ps(c, d), t3 = _mm512_unpackhi_ps(c, d);
    t[4 * g + 0] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    t[4 * g + 1] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    t[4 * g + 2] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    t[4 * g + 3] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  }
  /* t[4g + c], 128-bit lane q = rows 4g..4g+3 of column 4q + c; transpose the 4x4 lane grid. */
  for (int c = 0; c < 4; c++) {
    __m512 x0 = _mm512_shuffle_f32x4(t[c], t[4 + c], 0x88);
    __m512 x1 = _mm512_shuffle_f32x4(t[c], t[4 + c], 0xDD);
    __m512 x2 = _mm512_shuffle_f32x4(t[8 + c], t[12 + c], 0x88);
    __m512 x3 = _mm512_shuffle_f32x4(t[8 + c], t[12 + c], 0xDD);
    r[c] = _mm512_shuffle_f32x4(x0, x2, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(x0, x2, 0xDD);
    r[4 + c] = _mm512_shuffle_f32x4(x1, x3, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(x1, x3, 0xDD);
  }
}

SY_INLINE __mmask16 mask_n(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

/* r[t] = column t of the [rows x kl] block at src (row stride ld), rows past `rows` and columns
 * past kl zero: the transposing packs' 16x16 step. */
SY_INLINE void load_transposed(const float *src, int64_t ld, int rows, int kl, __m512 r[16]) {
  __mmask16 lm = mask_n(kl);
  for (int i = 0; i < 16; i++) r[i] = i < rows ? _mm512_maskz_loadu_ps(lm, src + (int64_t)i * ld) : _mm512_setzero_ps();
  tr16x16(r);
}

/*
 * Copying packs (op(A) transposed in memory, op(B) not) go source row by source row: each row's
 * floats are read once, front to back, and dealt to every panel. Walking one panel down all kc
 * rows instead reads 56 or 128 bytes per row at a stride of the leading dimension (4 KiB for the
 * expert FFN's [rows, dFF] activations: a new page on every load), so the hardware prefetchers
 * never get going. Packing dH1ᵀ and dH3ᵀ for the weight gradients took 26% less time this way.
 * They go COPY_ROWS source rows at a time, panel by panel within them, so that each panel gets
 * COPY_ROWS contiguous chunks at once; row by row over all panels scattered every row's chunks
 * kc·MR (or kc·NR) floats apart. A [112 x 512] block of dH1ᵀ: 12-13.8 us instead of 18.5-21.1
 * from L2, 23-27 instead of 25-35 from memory (kc = 509 and 300 gain as much).
 */
#define COPY_ROWS 16

/*
 * Pack rows [0, mc) x depth [0, kc) of op(A) into MR-row panels: ap[p*MR*kc + l*MR + i].
 * trans=0: op(A)[i,l] = a[i*lda + l]; trans=1: op(A)[i,l] = a[l*lda + i].
 */
static void pack_a(int trans, const float *a, int64_t lda, int mc, int kc, float *ap) {
  const __mmask16 st = mask_n(MR);
  if (trans) {
    for (int l0 = 0; l0 < kc; l0 += COPY_ROWS) {
      int l1 = l0 + COPY_ROWS < kc ? l0 + COPY_ROWS : kc;
      for (int p = 0; p < mc; p += MR) {
        /* the last panel's rows past mc are zero */
        __mmask16 lm = p + MR <= mc ? st : mask_n(mc - p);
        float *dst = ap + (int64_t)p * kc;
        for (int l = l0; l < l1; l++)
          _mm512_mask_storeu_ps(dst + l * MR, st, _mm512_maskz_loadu_ps(lm, a + (int64_t)l * lda + p));
      }
    }
    return;
  }
  for (int p = 0; p < mc; p += MR) {
    int mr = mc - p < MR ? mc - p : MR;
    float *dst = ap + (int64_t)p * kc;
    const float *src = a + (int64_t)p * lda;
    __m512 r[16];
    for (int l = 0; l < kc; l += 16) {
      int kl = kc - l < 16 ? kc - l : 16;
      load_transposed(src + l, lda, mr, kl, r);
      for (int t = 0; t < kl; t++) _mm512_mask_storeu_ps(dst + (l + t) * MR, st, r[t]);
    }
  }
}

/*
 * Pack depth [0, kc) x cols [0, nc) of op(B) into NR-col panels: bp[q*NR*kc + l*NR + j].
 * trans=0: op(B)[l,j] = b[l*ldb + j]; trans=1: op(B)[l,j] = b[j*ldb + l].
 */
static void pack_b(int trans, const float *b, int64_t ldb, int kc, int nc, float *bp) {
  if (!trans) {
    const int full = nc - nc % NR; /* columns in whole panels */
    __mmask16 m0 = mask_n(nc - full), m1 = mask_n(nc - full > 16 ? nc - full - 16 : 0);
    for (int l0 = 0; l0 < kc; l0 += COPY_ROWS) {
      int l1 = l0 + COPY_ROWS < kc ? l0 + COPY_ROWS : kc;
      for (int q = 0; q < full; q += NR) {
        float *dst = bp + (int64_t)q * kc;
        for (int l = l0; l < l1; l++) {
          const float *src = b + (int64_t)l * ldb + q;
          _mm512_store_ps(dst + l * NR, _mm512_loadu_ps(src));
          _mm512_store_ps(dst + l * NR + 16, _mm512_loadu_ps(src + 16));
        }
      }
      if (full < nc) { /* the last panel's columns past nc are zero */
        float *dst = bp + (int64_t)full * kc;
        for (int l = l0; l < l1; l++) {
          const float *src = b + (int64_t)l * ldb + full;
          _mm512_store_ps(dst + l * NR, _mm512_maskz_loadu_ps(m0, src));
          _mm512_store_ps(dst + l * NR + 16, _mm512_maskz_loadu_ps(m1, src + 16));
        }
      }
    }
    return;
  }
  for (int q = 0; q < nc; q += NR) {
    int nr = nc - q < NR ? nc - q : NR;
    float *dst = bp + (int64_t)q * kc;
    for (int h = 0; h < NR; h += 16) {
      int rows = nr - h; /* valid j's in this half */
      if (rows > 16) rows = 16;
      if (rows <= 0) {
        for (int l = 0; l < kc; l++) _mm512_store_ps(dst + l * NR + h, _mm512_setzero_ps());
        continue;
      }
      const float *src = b + (int64_t)(q + h) * ldb;
      __m512 r[16];
      for (int l = 0; l < kc; l += 16) {
        int kl = kc - l < 16 ? kc - l : 16;
        load_transposed(src + l, ldb, rows, kl, r);
        for (int t = 0; t < kl; t++) _mm512_store_ps(dst + (l + t) * NR + h, r[t]);
      }
    }
  }
}

/*
 * Register micro-kernel, instantiated for R = 2..14 rows and NV = 1..2 vectors of 16 columns so
 * that edge tiles do not pay for a full 14x32 tile. Rows are broadcast from the MR-interleaved
 * packed A panel, columns loaded from the NR-wide packed B panel. The arithmetic for an element
 * (zero-initialised accumulator, FMAs in increasing k, then one add into C) is the same in every
 * variant, so results do not depend on which variant computed a tile.
 */
/* k steps per line of the prefetch stream: a 14-row step is ~14 cycles, a line from memory
 * takes ~20 cycles of one core's share of bandwidth */
#define PF_EVERY 2
SY_INLINE void micro_gen(const int R, const int NV, int64_t kc, const float *SY_RESTRICT ap,
                         const float *SY_RESTRICT bp, float *c, int64_t ldc, int mr, int nr, int acc,
                         sy_prefetch *pf) {
  sy_prefetch q = {0};
  if (pf) q = *pf;
  __m512 cr[MR][2];
#pragma GCC unroll 14
  for (int i = 0; i < R; i++) {
    cr[i][0] = _mm512_setzero_ps();
    cr[i][1] = _mm512_setzero_ps();
  }
  if (acc != 2) /* C's lines, for the stores at the end (streamed stores need none) */
    for (int i = 0; i < mr; i++) {
      _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
      if (NV > 1) _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
    }
  for (int64_t l = 0; l < kc; l++) {
    if (l % PF_EVERY == 0) sy_prefetch_step(&q);
    _mm_prefetch((const char *)(bp + 8 * NR), _MM_HINT_T0);
    if (NV > 1) _mm_prefetch((const char *)(bp + 8 * NR + 16), _MM_HINT_T0);
    __m512 b0 = _mm512_load_ps(bp);
    __m512 b1 = NV > 1 ? _mm512_load_ps(bp + 16) : b0;
#pragma GCC unroll 14
    for (int i = 0; i < R; i++) {
      __m512 av = _mm512_set1_ps(ap[i]);
      cr[i][0] = _mm512_fmadd_ps(av, b0, cr[i][0]);
      if (NV > 1) cr[i][1] = _mm512_fmadd_ps(av, b1, cr[i][1]);
    }
    ap += MR;
    bp += NR;
  }
  if (pf) *pf = q;
  if (acc == 2 && NV > 1 && nr == NR && !((uintptr_t)c & 63) && !(ldc & 15)) {
    /* whole, aligned 128-byte row segments: non-temporal stores write them without reading the
     * lines first */
#pragma GCC unroll 14
    for (int i = 0; i < R; i++) {
      if (i < mr) {
        float *cp = c + (int64_t)i * ldc;
        _mm512_stream_ps(cp, cr[i][0]);
        _mm512_stream_ps(cp + 16, cr[i][1]);
      }
    }
  } else if (nr == NV * 16) {
#pragma GCC unroll 14
    for (int i = 0; i < R; i++) {
      if (i < mr) {
        float *cp = c + (int64_t)i * ldc;
        __m512 v0 = cr[i][0], v1 = cr[i][1];
        if (acc == 1) {
          v0 = _mm512_add_ps(_mm512_loadu_ps(cp), v0);
          if (NV > 1) v1 = _mm512_add_ps(_mm512_loadu_ps(cp + 16), v1);
        }
        _mm512_storeu_ps(cp, v0);
        if (NV > 1) _mm512_storeu_ps(cp + 16, v1);
      }
    }
  } else {
    __mmask16 m0 = mask_n(nr), m1 = mask_n(nr > 16 ? nr - 16 : 0);
#pragma GCC unroll 14
    for (int i = 0; i < R; i++) {
      if (i < mr) {
        float *cp = c + (int64_t)i * ldc;
        __m512 v0 = cr[i][0], v1 = cr[i][1];
        if (acc == 1) {
          v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cp), v0);
          if (NV > 1) v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cp + 16), v1);
        }
        _mm512_mask_storeu_ps(cp, m0, v0);
        if (NV > 1) _mm512_mask_storeu_ps(cp + 16, m1, v1);
      }
    }
  }
}

#define DEF_MICRO(R, NV)                                                                                   \
  static void micro_##R##_##NV(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc, int mr, \
                               int nr, int acc, sy_prefetch *pf) {                                         \
    micro_gen(R, NV, kc, ap, bp, c, ldc, mr, nr, acc, pf);                                                 \
  }
DEF_MICRO(14, 2) DEF_MICRO(12, 2) DEF_MICRO(10, 2) DEF_MICRO(8, 2) DEF_MICRO(6, 2) DEF_MICRO(4, 2) DEF_MICRO(2, 2)
DEF_MICRO(14, 1) DEF_MICRO(12, 1) DEF_MICRO(10, 1) DEF_MICRO(8, 1) DEF_MICRO(6, 1) DEF_MICRO(4, 1) DEF_MICRO(2, 1)

typedef void (*micro_fn)(int64_t, const float *, const float *, float *, int64_t, int, int, int, sy_prefetch *);
static const micro_fn micro_table[2][8] = {
    {micro_2_1, micro_2_1, micro_4_1, micro_6_1, micro_8_1, micro_10_1, micro_12_1, micro_14_1},
    {micro_2_2, micro_2_2, micro_4_2, micro_6_2, micro_8_2, micro_10_2, micro_12_2, micro_14_2},
};

static void micro(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc, int mr, int nr, int acc,
                  sy_prefetch *pf) {
  micro_table[nr > 16][(mr + 1) >> 1](kc, ap, bp, c, ldc, mr, nr, acc, pf);
}

const sy_gemm_isa sy_gemm_isa_avx512 = {
    "avx512", MR, NR, SY_AVX512_KC, SY_AVX512_MC, pack_a, pack_b, micro,
};

#elif defined(__x86_64__)
#error "gemm_avx512.c must be compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mavx2"
#endif
