/*
 * AVX2/FMA GEMM building blocks: 6x16 register micro-kernel (12 ymm accumulators) and packers
 * with 8x8 in-register transposes. Compiled with -mavx2 -mfma.
 */
#include "sy.h"
#include "gemm_portable.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#include <string.h>

#define MR 6
#define NR 16

#ifndef SY_AVX2_KC
#define SY_AVX2_KC 256
#endif
#ifndef SY_AVX2_MC
#define SY_AVX2_MC 120
#endif

SY_INLINE void tr8x8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int g = 0; g < 2; g++) {
    __m256 a = r[4 * g], b = r[4 * g + 1], c = r[4 * g + 2], d = r[4 * g + 3];
    __m256 t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
    __m256 t2 = _mm256_unpacklo_ps(c, d), t3 = _mm256_unpackhi_ps(c, d);
    s[4 * g + 0] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * g + 1] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    s[4 * g + 2] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * g + 3] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int c = 0; c < 4; c++) {
    t[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
    t[4 + c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
  }
  for (int i = 0; i < 8; i++) r[i] = t[i];
}

static void pack_a(int trans, const float *a, int64_t lda, int mc, int kc, float *ap) {
  for (int p = 0; p < mc; p += MR) {
    int mr = mc - p < MR ? mc - p : MR;
    float *dst = ap + (int64_t)p * kc;
    if (trans) {
      const float *src = a + p;
      for (int l = 0; l < kc; l++) {
        const float *s = src + (int64_t)l * lda;
        int i = 0;
        for (; i < mr; i++) dst[l * MR + i] = s[i];
        for (; i < MR; i++) dst[l * MR + i] = 0.0f;
      }
    } else {
      const float *src = a + (int64_t)p * lda;
      int l = 0;
      if (mr == MR) {
        __m256 r[8];
        float tmp[8];
        for (; l + 8 <= kc; l += 8) {
          for (int i = 0; i < 6; i++) r[i] = _mm256_loadu_ps(src + (int64_t)i * lda + l);
          r[6] = r[7] = _mm256_setzero_ps();
          tr8x8(r);
          for (int t = 0; t < 8; t++) {
            _mm256_storeu_ps(tmp, r[t]);
            memcpy(dst + (l + t) * MR, tmp, MR * sizeof(float));
          }
        }
      }
      for (; l < kc; l++) {
        int i = 0;
        for (; i < mr; i++) dst[l * MR + i] = src[(int64_t)i * lda + l];
        for (; i < MR; i++) dst[l * MR + i] = 0.0f;
      }
    }
  }
}

static void pack_b(int trans, const float *b, int64_t ldb, int kc, int nc, float *bp) {
  for (int q = 0; q < nc; q += NR) {
    int nr = nc - q < NR ? nc - q : NR;
    float *dst = bp + (int64_t)q * kc;
    if (!trans) {
      const float *src = b + q;
      if (nr == NR) {
        for (int l = 0; l < kc; l++) {
          const float *s = src + (int64_t)l * ldb;
          _mm256_store_ps(dst + l * NR, _mm256_loadu_ps(s));
          _mm256_store_ps(dst + l * NR + 8, _mm256_loadu_ps(s + 8));
        }
      } else {
        for (int l = 0; l < kc; l++) {
          const float *s = src + (int64_t)l * ldb;
          int j = 0;
          for (; j < nr; j++) dst[l * NR + j] = s[j];
          for (; j < NR; j++) dst[l * NR + j] = 0.0f;
        }
      }
    } else {
      const float *src = b + (int64_t)q * ldb;
      int l = 0;
      if (nr == NR) {
        __m256 r[8];
        for (; l + 8 <= kc; l += 8) {
          for (int h = 0; h < 2; h++) {
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + (int64_t)(h * 8 + i) * ldb + l);
            tr8x8(r);
            for (int t = 0; t < 8; t++) _mm256_store_ps(dst + (l + t) * NR + h * 8, r[t]);
          }
        }
      }
      for (; l < kc; l++) {
        int j = 0;
        for (; j < nr; j++) dst[l * NR + j] = src[(int64_t)j * ldb + l];
        for (; j < NR; j++) dst[l * NR + j] = 0.0f;
      }
    }
  }
}

#define FMA_ROW(i)                                   \
  {                                                  \
    __m256 av = _mm256_broadcast_ss(ap + i);         \
    c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);      \
    c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);      \
  }
#define ALL_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define DECL_ROW(i) __m256 c##i##0 = _mm256_setzero_ps(), c##i##1 = _mm256_setzero_ps();
#define SAVE_ROW(i) _mm256_storeu_ps(tmp[i], c##i##0); _mm256_storeu_ps(tmp[i] + 8, c##i##1);

/* k steps per line of the prefetch stream (a 6-row step is ~6 cycles) */
#define PF_EVERY 4

static void micro(int64_t kc, const float *SY_RESTRICT ap, const float *SY_RESTRICT bp, float *c,
                  int64_t ldc, int mr, int nr, int acc, sy_prefetch *pf) {
  sy_prefetch q = {0};
  if (pf) q = *pf;
  ALL_ROWS(DECL_ROW)
  for (int i = 0; i < mr; i++) _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
  for (int64_t l = 0; l < kc; l++) {
    if (l % PF_EVERY == 0) sy_prefetch_step(&q);
    __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
    ALL_ROWS(FMA_ROW)
    ap += MR;
    bp += NR;
  }
  if (pf) *pf = q;
  if (mr == MR && nr == NR) {
#define STORE_FULL(i)                                                    \
    {                                                                    \
      float *cr = c + (int64_t)(i) * ldc;                                \
      if (acc == 1) {                                                    \
        c##i##0 = _mm256_add_ps(_mm256_loadu_ps(cr), c##i##0);           \
        c##i##1 = _mm256_add_ps(_mm256_loadu_ps(cr + 8), c##i##1);       \
      }                                                                  \
      _mm256_storeu_ps(cr, c##i##0);                                     \
      _mm256_storeu_ps(cr + 8, c##i##1);                                 \
    }
    ALL_ROWS(STORE_FULL)
#undef STORE_FULL
  } else {
    float tmp[MR][NR];
    ALL_ROWS(SAVE_ROW)
    sy_store_tile(NR, &tmp[0][0], mr, nr, c, ldc, acc);
  }
}

const sy_gemm_isa sy_gemm_isa_avx2 = {
    "avx2", MR, NR, SY_AVX2_KC, SY_AVX2_MC, pack_a, pack_b, micro,
};

#elif defined(__x86_64__)
#error "gemm_avx2.c must be compiled with -mavx2 -mfma"
#endif
