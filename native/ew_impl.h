/*
 * Element-wise and row-wise kernels, written once as branch-free C that GCC vectorises, and
 * compiled once per ISA (ew_avx512.c, ew_avx2.c, ew_scalar.c define SY_EW_TABLE / SY_EW_NAME and
 * include this file). Loops carry `#pragma GCC ivdep` because `out` may alias an input exactly.
 *
 * Math: exp (Cephes-style, Cody-Waite reduction, two-step scaling so results are correct into the
 * subnormal range and overflow to +inf), log (Cephes), tanh (odd polynomial below 0.625, else via
 * exp), erfc (Numerical Recipes Chebyshev fit, 1.2e-7 relative, with the exponent evaluated as an
 * exact-plus-small sum so tails keep their relative accuracy). gelu uses the erfc form on both
 * sides so large negative inputs do not cancel; gelu_tanh uses x·sigmoid(2u) for the same reason.
 * All are ~1e-7 relative; sums are accumulated in double, as in the reference backend.
 * One exception to "written once": SiLU and its derivative, the expert FFN's activation, have an
 * AVX-512 intrinsics version (v_silu, v_silu_grad) that the avx512 build uses.
 */
#include "sy.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifndef SY_EW_TABLE
#error "define SY_EW_TABLE and SY_EW_NAME before including ew_impl.h"
#endif

#define IVDEP _Pragma("GCC ivdep")


SY_INLINE int32_t f2i(float f) {
  int32_t i;
  memcpy(&i, &f, 4);
  return i;
}
SY_INLINE float i2f(int32_t i) {
  float f;
  memcpy(&f, &i, 4);
  return f;
}

/* exp(a + b) where a carries the magnitude (any float) and b is small (|b| < ~2): the reduction
 * r = (a - n·C1) - n·C2 + b keeps a's low bits exactly. */
SY_INLINE float sy_exp2part(float a, float b) {
  const float L2E = 1.44269504088896341f, C1 = 0.693359375f, C2 = -2.12194440e-4f;
  const float MAGIC = 12582912.0f; /* 1.5·2^23: round-to-nearest by addition */
  float s = a + b;
  float sc = s > 89.0f ? 89.0f : s;
  sc = sc < -104.0f ? -104.0f : sc;
  sc = s != s ? 0.0f : sc;
  /* out of range (or NaN): reduce the clamped value instead of a + b */
  float ac = sc == s ? a : sc, bc = sc == s ? b : 0.0f;
  float nf = (sc * L2E + MAGIC) - MAGIC;
  float r = (ac - nf * C1) - nf * C2 + bc;
  float r2 = r * r;
  float p = ((((1.9875691500E-4f * r + 1.3981999507E-3f) * r + 8.3334519073E-3f) * r + 4.1665795894E-2f) * r +
             1.6666665459E-1f) * r + 5.0000001201E-1f;
  p = p * r2 + r + 1.0f;
  int32_t n = (int32_t)nf;
  int32_t n1 = n >> 1, n2 = n - n1;
  float res = p * i2f((n1 + 127) << 23) * i2f((n2 + 127) << 23);
  return s != s ? s : res;
}

SY_INLINE float sy_exp(float x) { return sy_exp2part(x, 0.0f); }

SY_INLINE float sy_log(float x) {
  const float FLT_MIN_ = 1.17549435e-38f;
  int sub = x < FLT_MIN_;
  float xs = sub ? x * 8388608.0f : x;
  int32_t ix = f2i(xs);
  int32_t e = ((ix >> 23) & 0xff) - 126 - (sub ? 23 : 0);
  float m = i2f((ix & 0x007fffff) | 0x3f000000);
  int lt = m < 0.707106781186547524f;
  e -= lt;
  m = lt ? m + m - 1.0f : m - 1.0f;
  float z = m * m;
  float y = ((((((((7.0376836292E-2f * m - 1.1514610310E-1f) * m + 1.1676998740E-1f) * m - 1.2420140846E-1f) * m +
                 1.4249322787E-1f) * m - 1.6668057665E-1f) * m + 2.0000714765E-1f) * m - 2.4999993993E-1f) * m +
             3.3333331174E-1f) * m * z;
  float fe = (float)e;
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  float r = m + y;
  r += 0.693359375f * fe;
  r = x == INFINITY ? x : r;
  r = x == 0.0f ? -INFINITY : r;
  r = x < 0.0f ? NAN : r;
  return x != x ? x : r;
}

/* sigmoid(v) and sigmoid(-v) without cancellation. */
SY_INLINE void sy_sigmoid2(float v, float *s, float *sc) {
  float av = v < 0.0f ? -v : v;
  float e = sy_exp(-av);
  float inv = 1.0f / (1.0f + e);
  float small = e * inv; /* sigmoid(-|v|) */
  int pos = v >= 0.0f;
  *s = pos ? inv : small;
  *sc = pos ? small : inv;
  if (v != v) {
    *s = v;
    *sc = v;
  }
}

SY_INLINE float sy_sigmoid(float v) {
  float av = v < 0.0f ? -v : v;
  float e = sy_exp(-av);
  float inv = 1.0f / (1.0f + e);
  float r = v >= 0.0f ? inv : e * inv;
  return v != v ? v : r;
}

SY_INLINE float sy_tanh(float x) {
  float ax = x < 0.0f ? -x : x;
  float z = x * x;
  float small = ((((-5.70498872745E-3f * z + 2.06390887954E-2f) * z - 5.37397155531E-2f) * z + 1.33314422036E-1f) * z -
                 3.33332819422E-1f) * z * x + x;
  float e = sy_exp(2.0f * (ax > 44.0f ? 44.0f : ax));
  float big = 1.0f - 2.0f / (e + 1.0f);
  big = x < 0.0f ? -big : big;
  float r = ax < 0.625f ? small : big;
  return x != x ? x : r;
}

/* x² = hi + lo (the float square is exact in double; lo keeps the next 24 bits). */
SY_INLINE void sy_sq2(float x, float *hi, float *lo) {
  double d = (double)x * (double)x;
  float h = (float)d;
  float l = (float)(d - (double)h);
  *hi = h;
  *lo = l == l ? l : 0.0f; /* inf - inf */
}

/* erfc(x/√2) for x >= 0 (Numerical Recipes erfcc in z = x/√2, fractional error < 1.2e-7); the
 * dominant exponent -z² = -x²/2 is formed exactly from x so tails keep their relative accuracy. */
SY_INLINE float sy_erfc_sqrt2(float x) {
  float xc = x > 15.0f ? 15.0f : x;
  float z = xc * 0.70710678118654752f;
  float t = 1.0f / (1.0f + 0.5f * z);
  float p = -1.26551223f +
            t * (1.00002368f +
                 t * (0.37409196f +
                      t * (0.09678418f +
                           t * (-0.18628806f +
                                t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
  float hi, lo;
  sy_sq2(xc, &hi, &lo);
  return t * sy_exp2part(-0.5f * hi, p - 0.5f * lo);
}

/* 1 + erf(x/√2) (= 2·Φ(x)), accurate on both tails. */
SY_INLINE float sy_one_plus_erf(float x) {
  float ax = x < 0.0f ? -x : x;
  float e = sy_erfc_sqrt2(ax);
  float r = x >= 0.0f ? 2.0f - e : e;
  return x != x ? x : r;
}

/* exp(-x²/2) with the square split exactly. */
SY_INLINE float sy_gauss(float x) {
  float xc = x > 20.0f ? 20.0f : (x < -20.0f ? -20.0f : x);
  float hi, lo;
  sy_sq2(xc, &hi, &lo);
  return sy_exp2part(-0.5f * hi, -0.5f * lo);
}

#define INV_SQRT_2PI 0.398942280401432678f
#define GT_K1 1.59576912160573071f /* 2·sqrt(2/π) */
#define GT_K2 0.0713548162726008f  /* 2·sqrt(2/π)·0.044715 */

SY_INLINE float sy_gelu(float x) { return 0.5f * x * sy_one_plus_erf(x); }
SY_INLINE float sy_gelu_d(float x) { return 0.5f * sy_one_plus_erf(x) + x * INV_SQRT_2PI * sy_gauss(x); }

/* v = 2u = x·(K1 + K2·x²) in double, returned as hi + lo floats (the tails of x·sigmoid(v) are
 * exp(-|v|) with |v| up to ~100: a float v would cost ~1e-5 relative there). */
SY_INLINE void sy_gelu_tanh_v(float x, float *hi, float *lo) {
  double xd = (double)x;
  double v = xd * (1.5957691216057308 + 0.071354816272600804 * (xd * xd));
  float h = (float)v;
  float l = (float)(v - (double)h);
  *hi = h;
  *lo = l == l ? l : 0.0f; /* inf - inf */
}

/* sigmoid(v) and sigmoid(-v) for v = hi + lo. */
SY_INLINE void sy_sigmoid2x(float hi, float lo, float *s, float *sc) {
  int pos = hi >= 0.0f;
  float e = sy_exp2part(pos ? -hi : hi, pos ? -lo : lo); /* exp(-|v|) */
  float inv = 1.0f / (1.0f + e);
  float small = e * inv;
  *s = pos ? inv : small;
  *sc = pos ? small : inv;
}

SY_INLINE float sy_gelu_tanh(float x) {
  float hi, lo, s, sc;
  sy_gelu_tanh_v(x, &hi, &lo);
  sy_sigmoid2x(hi, lo, &s, &sc);
  float r = x * s;
  return x != x ? x : r;
}
SY_INLINE float sy_gelu_tanh_d(float x) {
  float x2 = x * x;
  float hi, lo, s, sc;
  sy_gelu_tanh_v(x, &hi, &lo);
  sy_sigmoid2x(hi, lo, &s, &sc);
  float r = s * (1.0f + x * sc * (GT_K1 + 3.0f * GT_K2 * x2));
  return x != x ? x : r;
}

SY_INLINE float sy_silu(float x) { return x * sy_sigmoid(x); }
SY_INLINE float sy_silu_d(float x) {
  float s, sc;
  sy_sigmoid2(x, &s, &sc);
  return s * (1.0f + x * sc);
}

SY_INLINE float sy_log1p_pos(float u) { /* log(1+u) for u in [0, 1] */
  float w = 1.0f + u;
  float d = w - 1.0f;
  float r = sy_log(w) * (u / (d == 0.0f ? 1.0f : d));
  return d == 0.0f ? u : r;
}

SY_INLINE float sy_softplus(float x) {
  float ax = x < 0.0f ? -x : x;
  float e = sy_exp(-ax);
  float mid = (x > 0.0f ? x : 0.0f) + sy_log1p_pos(e);
  float r = x > 20.0f ? x : (x < -20.0f ? e : mid); /* x < -20: exp(x) = exp(-|x|) */
  return x != x ? x : r;
}

SY_INLINE float sy_relu(float x) { return x > 0.0f ? x : 0.0f; }
SY_INLINE float sy_sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); }

/* ------------------------------------------------------------------------------------------ */

#define LOOP(n, ...)                      \
  IVDEP for (int64_t i = 0; i < (n); i++) { \
    __VA_ARGS__;                          \
  }

#if defined(__AVX512F__) && defined(__AVX512DQ__)
/* SiLU and its derivative, 16 lanes at a time (the expert FFN's activation: its epilogues run over
 * every [rows, dFF] element each step). GCC vectorises sy_sigmoid2 above, but keeps the general
 * exp's two-part argument, overflow clamp, NaN selects and two-multiply scaling, and a divide.
 * Here, for exp(-|v|): the same Cody-Waite reduction, polynomial and -104 floor as sy_exp2part,
 * the 2^n scaling by one vscalefps (one rounding, as the two multiplies), and 1/(1+e) from
 * vrcp14ps plus one Newton step (d in [1, 2], within ~1 ulp). Gated SiLU: 0.74 -> 0.47 ns an
 * element (docs/benchmarks.md, session 6). */
SY_INLINE __m512 v_exp_neg_abs(__m512 av) {
  const __m512 L2E = _mm512_set1_ps(1.44269504088896341f), C1 = _mm512_set1_ps(0.693359375f),
               C2 = _mm512_set1_ps(-2.12194440e-4f);
  __m512 x = _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), av), _mm512_set1_ps(-104.0f));
  __m512 nf = _mm512_roundscale_ps(_mm512_mul_ps(x, L2E), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(nf, C2, _mm512_fnmadd_ps(nf, C1, x));
  __m512 r2 = _mm512_mul_ps(r, r);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500E-4f), r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, nf);
}

/* sigmoid(v) and sigmoid(-v); NaN lanes give NaN in both (av is NaN, and so is everything after). */
SY_INLINE void v_sigmoid2(__m512 v, __m512 *s, __m512 *sc) {
  __m512 av = _mm512_abs_ps(v);
  __m512 e = v_exp_neg_abs(av);
  __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), e);
  __m512 r0 = _mm512_rcp14_ps(d);
  __m512 inv = _mm512_fmadd_ps(r0, _mm512_fnmadd_ps(d, r0, _mm512_set1_ps(1.0f)), r0);
  __m512 small = _mm512_mul_ps(e, inv); /* sigmoid(-|v|) */
  __mmask16 pos = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ);
  *s = _mm512_mask_mov_ps(_mm512_mask_mov_ps(small, pos, inv), nan, v);
  *sc = _mm512_mask_mov_ps(_mm512_mask_mov_ps(inv, pos, small), nan, v);
}

SY_INLINE __mmask16 v_tail(int64_t left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u); }

/* out = silu(a)·b (b NULL: silu(a)); out may alias a or b exactly. */
static void v_silu(const float *a, const float *b, float *out, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = v_tail(n - i);
    __m512 av = _mm512_maskz_loadu_ps(m, a + i), s, sc;
    v_sigmoid2(av, &s, &sc);
    __m512 f = _mm512_mul_ps(av, s);
    if (b) f = _mm512_mul_ps(f, _mm512_maskz_loadu_ps(m, b + i));
    _mm512_mask_storeu_ps(out + i, m, f);
  }
}

/* Without b: dx = dy·silu'(a). With b: da = dy·b·silu'(a), db = dy·silu(a). Outputs may alias inputs. */
static void v_silu_grad(const float *a, const float *b, const float *dy, float *da, float *db, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = v_tail(n - i);
    __m512 av = _mm512_maskz_loadu_ps(m, a + i), g = _mm512_maskz_loadu_ps(m, dy + i), s, sc;
    v_sigmoid2(av, &s, &sc);
    __m512 d = _mm512_mul_ps(s, _mm512_fmadd_ps(av, sc, _mm512_set1_ps(1.0f)));
    if (b) {
      __m512 bv = _mm512_maskz_loadu_ps(m, b + i);
      __m512 f = _mm512_mul_ps(av, s);
      _mm512_mask_storeu_ps(da + i, m, _mm512_mul_ps(_mm512_mul_ps(g, bv), d));
      _mm512_mask_storeu_ps(db + i, m, _mm512_mul_ps(g, f));
    } else {
      _mm512_mask_storeu_ps(da + i, m, _mm512_mul_ps(g, d));
    }
  }
}
#define SY_VEC_SILU 1
#endif

static void k_unary(int op, const float *x, float *out, int64_t n) {
  switch (op) {
    case SY_NEG: LOOP(n, out[i] = -x[i]) break;
    case SY_ABS: LOOP(n, out[i] = fabsf(x[i])) break;
    case SY_EXP: LOOP(n, out[i] = sy_exp(x[i])) break;
    case SY_LOG: LOOP(n, out[i] = sy_log(x[i])) break;
    case SY_SQRT: LOOP(n, out[i] = sqrtf(x[i])) break;
    case SY_RSQRT: LOOP(n, out[i] = 1.0f / sqrtf(x[i])) break;
    case SY_TANH: LOOP(n, out[i] = sy_tanh(x[i])) break;
    case SY_SIGMOID: LOOP(n, out[i] = sy_sigmoid(x[i])) break;
    case SY_SOFTPLUS: LOOP(n, out[i] = sy_softplus(x[i])) break;
    case SY_RELU: LOOP(n, out[i] = sy_relu(x[i])) break;
    case SY_GELU: LOOP(n, out[i] = sy_gelu(x[i])) break;
    case SY_GELU_TANH: LOOP(n, out[i] = sy_gelu_tanh(x[i])) break;
#ifdef SY_VEC_SILU
    case SY_SILU: v_silu(x, NULL, out, n); break;
#else
    case SY_SILU: LOOP(n, out[i] = sy_silu(x[i])) break;
#endif
    case SY_SQUARE: LOOP(n, out[i] = x[i] * x[i]) break;
    case SY_SIGN: LOOP(n, out[i] = sy_sign(x[i])) break;
    default: break;
  }
}

static void k_unary_grad(int op, const float *x, const float *y, const float *dy, float *dx, int64_t n) {
  switch (op) {
    case SY_NEG: LOOP(n, dx[i] = -dy[i]) break;
    case SY_ABS: LOOP(n, dx[i] = dy[i] * sy_sign(x[i])) break;
    case SY_EXP: LOOP(n, dx[i] = dy[i] * y[i]) break;
    case SY_LOG: LOOP(n, dx[i] = dy[i] / x[i]) break;
    case SY_SQRT: LOOP(n, dx[i] = dy[i] * (0.5f / y[i])) break;
    case SY_RSQRT: LOOP(n, dx[i] = dy[i] * (-0.5f * y[i] * y[i] * y[i])) break;
    case SY_TANH: LOOP(n, dx[i] = dy[i] * ((1.0f - y[i]) * (1.0f + y[i]))) break;
    case SY_SIGMOID: LOOP(n, dx[i] = dy[i] * (y[i] * (1.0f - y[i]))) break;
    case SY_SOFTPLUS: LOOP(n, dx[i] = dy[i] * sy_sigmoid(x[i])) break;
    case SY_RELU: LOOP(n, dx[i] = x[i] > 0.0f ? dy[i] : dy[i] * 0.0f) break;
    case SY_GELU: LOOP(n, dx[i] = dy[i] * sy_gelu_d(x[i])) break;
    case SY_GELU_TANH: LOOP(n, dx[i] = dy[i] * sy_gelu_tanh_d(x[i])) break;
#ifdef SY_VEC_SILU
    case SY_SILU: v_silu_grad(x, NULL, dy, dx, NULL, n); break;
#else
    case SY_SILU: LOOP(n, dx[i] = dy[i] * sy_silu_d(x[i])) break;
#endif
    case SY_SQUARE: LOOP(n, dx[i] = dy[i] * (2.0f * x[i])) break;
    case SY_SIGN: LOOP(n, dx[i] = dy[i] * 0.0f) break;
    default: break;
  }
}

static void k_gated(int act, const float *a, const float *b, float *out, int64_t n) {
  switch (act) {
    case SY_RELU: LOOP(n, out[i] = sy_relu(a[i]) * b[i]) break;
    case SY_GELU: LOOP(n, out[i] = sy_gelu(a[i]) * b[i]) break;
    case SY_GELU_TANH: LOOP(n, out[i] = sy_gelu_tanh(a[i]) * b[i]) break;
#ifdef SY_VEC_SILU
    case SY_SILU: v_silu(a, b, out, n); break;
#else
    case SY_SILU: LOOP(n, out[i] = sy_silu(a[i]) * b[i]) break;
#endif
    default: break;
  }
}

static void k_gated_grad(int act, const float *a, const float *b, const float *dy, float *da, float *db, int64_t n) {
  switch (act) {
    case SY_RELU:
      LOOP(n, {
        float av = a[i], g = dy[i];
        float f = sy_relu(av);
        float d = av > 0.0f ? 1.0f : 0.0f;
        float bv = b[i];
        da[i] = g * bv * d;
        db[i] = g * f;
      })
      break;
    case SY_GELU:
      LOOP(n, {
        float av = a[i], g = dy[i], bv = b[i];
        float ope = sy_one_plus_erf(av);
        float f = 0.5f * av * ope;
        float d = 0.5f * ope + av * INV_SQRT_2PI * sy_gauss(av);
        da[i] = g * bv * d;
        db[i] = g * f;
      })
      break;
    case SY_GELU_TANH:
      LOOP(n, {
        float av = a[i], g = dy[i], bv = b[i];
        float x2 = av * av;
        float hi, lo, s, sc;
        sy_gelu_tanh_v(av, &hi, &lo);
        sy_sigmoid2x(hi, lo, &s, &sc);
        float f = av * s;
        float d = s * (1.0f + av * sc * (GT_K1 + 3.0f * GT_K2 * x2));
        da[i] = g * bv * d;
        db[i] = g * f;
      })
      break;
    case SY_SILU:
#ifdef SY_VEC_SILU
      v_silu_grad(a, b, dy, da, db, n);
#else
      LOOP(n, {
        float av = a[i], g = dy[i], bv = b[i];
        float s, sc;
        sy_sigmoid2(av, &s, &sc);
        float f = av * s;
        float d = s * (1.0f + av * sc);
        da[i] = g * bv * d;
        db[i] = g * f;
      })
#endif
      break;
    default: break;
  }
}

static void k_affine(const float *x, float scale, float shift, float *out, int64_t n) {
  LOOP(n, out[i] = x[i] * scale + shift)
}

SY_INLINE float sy_max_nan(float a, float b) { return (a >= b || a != a) ? a : b; }
SY_INLINE float sy_min_nan(float a, float b) { return (a <= b || a != a) ? a : b; }

static float sy_pow_js(float a, float b) {
  /* Math.pow semantics (computed in double like the reference): NaN exponent -> NaN, and
   * (+-1) ** (+-Infinity) -> NaN, where C's pow returns 1. */
  if (b != b) return NAN;
  if ((a == 1.0f || a == -1.0f) && (b == INFINITY || b == -INFINITY)) return NAN;
  return (float)pow((double)a, (double)b);
}

#define BIN_LOOP(expr)                                                              \
  if (sa == 1 && sb == 1) {                                                         \
    IVDEP for (int64_t i = 0; i < n; i++) {                                         \
      float A = a[i], B = b[i];                                                     \
      out[i] = (expr);                                                              \
    }                                                                               \
  } else if (sa == 1 && sb == 0) {                                                  \
    const float B = b[0];                                                           \
    IVDEP for (int64_t i = 0; i < n; i++) {                                         \
      float A = a[i];                                                               \
      out[i] = (expr);                                                              \
    }                                                                               \
  } else if (sa == 0 && sb == 1) {                                                  \
    const float A = a[0];                                                           \
    IVDEP for (int64_t i = 0; i < n; i++) {                                         \
      float B = b[i];                                                               \
      out[i] = (expr);                                                              \
    }                                                                               \
  } else {                                                                          \
    for (int64_t i = 0; i < n; i++) {                                               \
      float A = a[i * sa], B = b[i * sb];                                           \
      out[i] = (expr);                                                              \
    }                                                                               \
  }

static void k_binary_1d(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out, int64_t n) {
  switch (op) {
    case SY_ADD: BIN_LOOP(A + B) break;
    case SY_SUB: BIN_LOOP(A - B) break;
    case SY_MUL: BIN_LOOP(A * B) break;
    case SY_DIV: BIN_LOOP(A / B) break;
    case SY_MAX: BIN_LOOP(sy_max_nan(A, B)) break;
    case SY_MIN: BIN_LOOP(sy_min_nan(A, B)) break;
    case SY_POW:
      for (int64_t i = 0; i < n; i++) out[i] = sy_pow_js(a[i * sa], b[i * sb]);
      break;
    default: break;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Row reductions with fixed lane structure (deterministic, vectorisable)                      */
/* ------------------------------------------------------------------------------------------ */

#define LANES 16
/* Lane loop of a fixed-lane reduction. `unroll 1` keeps GCC from fully unrolling it before the
 * loop vectoriser runs (after which it would not vectorise the NaN-aware selects). */
#define LANE_LOOP _Pragma("GCC unroll 1") for (int j = 0; j < LANES; j++)

/* NaN-propagating max of a row. */
static float row_max(const float *x, int64_t n) {
  float acc[LANES];
  for (int j = 0; j < LANES; j++) acc[j] = -INFINITY;
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    LANE_LOOP acc[j] = sy_max_nan(x[i + j], acc[j]);
  float m = -INFINITY;
  for (int j = 0; j < LANES; j++) m = sy_max_nan(acc[j], m);
  for (; i < n; i++) m = sy_max_nan(x[i], m);
  return m;
}

static double row_sum(const float *x, int64_t n) {
  double acc[LANES];
  for (int j = 0; j < LANES; j++) acc[j] = 0.0;
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    LANE_LOOP acc[j] += (double)x[i + j];
  double s = 0.0;
  for (int j = 0; j < LANES; j++) s += acc[j];
  for (; i < n; i++) s += (double)x[i];
  return s;
}

static double row_dot(const float *x, const float *y, int64_t n) {
  double acc[LANES];
  for (int j = 0; j < LANES; j++) acc[j] = 0.0;
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    LANE_LOOP acc[j] += (double)x[i + j] * (double)y[i + j];
  double s = 0.0;
  for (int j = 0; j < LANES; j++) s += acc[j];
  for (; i < n; i++) s += (double)x[i] * (double)y[i];
  return s;
}

/* Σ (x - mu)² in double */
static double row_var_sum(const float *x, double mu, int64_t n) {
  double acc[LANES];
  for (int j = 0; j < LANES; j++) acc[j] = 0.0;
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    LANE_LOOP {
      double d = (double)x[i + j] - mu;
      acc[j] += d * d;
    }
  double s = 0.0;
  for (int j = 0; j < LANES; j++) s += acc[j];
  for (; i < n; i++) {
    double d = (double)x[i] - mu;
    s += d * d;
  }
  return s;
}

/* exp(x[i + j] - mx) for the last t < LANES elements of a row as one padded lane block, added to
 * the lane sums: vectorised like the full blocks, where a scalar loop over the tail made rows
 * narrower than LANES (an 8-expert router's softmax and logsumexp) cost ~5x more per element. */
SY_INLINE void tail_exp_sum(const float *x, float mx, int64_t t, double *acc, float *e) {
  float v[LANES];
  LANE_LOOP v[j] = j < t ? x[j] - mx : 0.0f;
  LANE_LOOP e[j] = sy_exp(v[j]);
  LANE_LOOP acc[j] += j < t ? (double)e[j] : 0.0;
}

/* Σ exp(x - mx), writing e = exp(x - mx) to out. */
static double row_exp_sum(const float *x, float mx, float *out, int64_t n) {
  double acc[LANES];
  for (int j = 0; j < LANES; j++) acc[j] = 0.0;
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    LANE_LOOP {
      float e = sy_exp(x[i + j] - mx);
      out[i + j] = e;
      acc[j] += (double)e;
    }
  if (i < n) {
    float e[LANES];
    tail_exp_sum(x + i, mx, n - i, acc, e);
    for (int64_t j = 0; j < n - i; j++) out[i + j] = e[j];
  }
  double s = 0.0;
  for (int j = 0; j < LANES; j++) s += acc[j];
  return s;
}

/* Σ exp(x - mx) without storing. */
static double row_exp_sum_ns(const float *x, float mx, int64_t n) {
  double acc[LANES];
  for (int j = 0; j < LANES; j++) acc[j] = 0.0;
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    LANE_LOOP acc[j] += (double)sy_exp(x[i + j] - mx);
  if (i < n) {
    float e[LANES];
    tail_exp_sum(x + i, mx, n - i, acc, e);
  }
  double s = 0.0;
  for (int j = 0; j < LANES; j++) s += acc[j];
  return s;
}

static void k_softmax(const float *x, int64_t r0, int64_t r1, int64_t cols, int is_log, float *out) {
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = x + r * cols;
    float *o = out + r * cols;
    float mx = row_max(xr, cols);
    if (mx == -INFINITY) mx = 0.0f;
    if (is_log) {
      double s = row_exp_sum_ns(xr, mx, cols);
      float lse = (float)log(s);
      IVDEP for (int64_t c = 0; c < cols; c++) o[c] = (float)(((double)xr[c] - (double)mx) - (double)lse);
    } else {
      double inv = 1.0 / row_exp_sum(xr, mx, o, cols);
      IVDEP for (int64_t c = 0; c < cols; c++) o[c] = (float)((double)o[c] * inv);
    }
  }
}

static void k_softmax_grad(const float *y, const float *dy, int64_t r0, int64_t r1, int64_t cols, int is_log, float *dx) {
  for (int64_t r = r0; r < r1; r++) {
    const float *yr = y + r * cols, *g = dy + r * cols;
    float *o = dx + r * cols;
    if (is_log) {
      double s = row_sum(g, cols);
      IVDEP for (int64_t c = 0; c < cols; c++) o[c] = (float)((double)g[c] - (double)sy_exp(yr[c]) * s);
    } else {
      double s = row_dot(g, yr, cols);
      IVDEP for (int64_t c = 0; c < cols; c++) o[c] = (float)((double)yr[c] * ((double)g[c] - s));
    }
  }
}

static void k_logsumexp(const float *x, int64_t r0, int64_t r1, int64_t cols, float *out) {
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = x + r * cols;
    float mx = row_max(xr, cols);
    if (mx == -INFINITY || mx == INFINITY) {
      out[r] = mx;
      continue;
    }
    double s = row_exp_sum_ns(xr, mx, cols);
    out[r] = (float)((double)mx + log(s));
  }
}

static void k_rms_norm(const float *x, const float *w, int64_t r0, int64_t r1, int64_t cols, float eps, float *out,
                       float *rstd) {
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = x + r * cols;
    float *o = out + r * cols;
    double ss = row_dot(xr, xr, cols);
    double rs = 1.0 / sqrt(ss / (double)cols + (double)eps);
    rstd[r] = (float)rs;
    if (w) {
      IVDEP for (int64_t c = 0; c < cols; c++) o[c] = (float)((double)xr[c] * rs * (double)w[c]);
    } else {
      IVDEP for (int64_t c = 0; c < cols; c++) o[c] = (float)((double)xr[c] * rs);
    }
  }
}

static void k_rms_norm_grad_dx(const float *x, const float *w, const float *rstd, const float *dy, int64_t r0,
                               int64_t r1, int64_t cols, float *dx) {
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = x + r * cols, *g = dy + r * cols;
    float *o = dx + r * cols;
    double rs = (double)rstd[r];
    if (w) {
      double acc[LANES];
      for (int j = 0; j < LANES; j++) acc[j] = 0.0;
      int64_t c = 0;
      for (; c + LANES <= cols; c += LANES)
        LANE_LOOP acc[j] += (double)g[c + j] * (double)w[c + j] * (double)xr[c + j];
      double dot = 0.0;
      for (int j = 0; j < LANES; j++) dot += acc[j];
      for (; c < cols; c++) dot += (double)g[c] * (double)w[c] * (double)xr[c];
      double coef = rs * rs * dot / (double)cols;
      IVDEP for (int64_t k = 0; k < cols; k++) o[k] = (float)(rs * ((double)g[k] * (double)w[k] - (double)xr[k] * coef));
    } else {
      double dot = row_dot(g, xr, cols);
      double coef = rs * rs * dot / (double)cols;
      IVDEP for (int64_t k = 0; k < cols; k++) o[k] = (float)(rs * ((double)g[k] - (double)xr[k] * coef));
    }
  }
}

static void k_layer_norm(const float *x, const float *w, const float *b, int64_t r0, int64_t r1, int64_t cols,
                         float eps, float *out, float *mean, float *rstd) {
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = x + r * cols;
    float *o = out + r * cols;
    double mu = row_sum(xr, cols) / (double)cols;
    double v = row_var_sum(xr, mu, cols);
    double rs = 1.0 / sqrt(v / (double)cols + (double)eps);
    mean[r] = (float)mu;
    rstd[r] = (float)rs;
    if (w && b) {
      IVDEP for (int64_t c = 0; c < cols; c++) o[c] = (float)(((double)xr[c] - mu) * rs * (double)w[c] + (double)b[c]);
    } else if (w) {
      IVDEP for (int64_t c = 0; c < cols; c++) o[c] = (float)(((double)xr[c] - mu) * rs * (double)w[c]);
    } else if (b) {
      IVDEP for (int64_t c = 0; c < cols; c++) o[c] = (float)(((double)xr[c] - mu) * rs + (double)b[c]);
    } else {
      IVDEP for (int64_t c = 0; c < cols; c++) o[c] = (float)(((double)xr[c] - mu) * rs);
    }
  }
}

static void k_layer_norm_grad_dx(const float *x, const float *w, const float *mean, const float *rstd, const float *dy,
                                 int64_t r0, int64_t r1, int64_t cols, float *dx) {
  for (int64_t r = r0; r < r1; r++) {
    const float *xr = x + r * cols, *gy = dy + r * cols;
    float *o = dx + r * cols;
    double mu = (double)mean[r], rs = (double)rstd[r];
    double a1[LANES], a2[LANES];
    for (int j = 0; j < LANES; j++) a1[j] = a2[j] = 0.0;
    int64_t c = 0;
    for (; c + LANES <= cols; c += LANES)
      LANE_LOOP {
        double g = (double)gy[c + j] * (w ? (double)w[c + j] : 1.0);
        double xh = ((double)xr[c + j] - mu) * rs;
        a1[j] += g;
        a2[j] += g * xh;
      }
    double sg = 0.0, sgx = 0.0;
    for (int j = 0; j < LANES; j++) {
      sg += a1[j];
      sgx += a2[j];
    }
    for (; c < cols; c++) {
      double g = (double)gy[c] * (w ? (double)w[c] : 1.0);
      double xh = ((double)xr[c] - mu) * rs;
      sg += g;
      sgx += g * xh;
    }
    sg /= (double)cols;
    sgx /= (double)cols;
    if (w) {
      IVDEP for (int64_t k = 0; k < cols; k++) {
        double g = (double)gy[k] * (double)w[k];
        double xh = ((double)xr[k] - mu) * rs;
        o[k] = (float)(rs * (g - sg - xh * sgx));
      }
    } else {
      IVDEP for (int64_t k = 0; k < cols; k++) {
        double g = (double)gy[k];
        double xh = ((double)xr[k] - mu) * rs;
        o[k] = (float)(rs * (g - sg - xh * sgx));
      }
    }
  }
}

#define PG_CHUNK 256
static void k_norm_param_grad(const float *x, const float *mean, const float *rstd, const float *dy, int64_t rows,
                              int64_t cols, int64_t c0, int64_t c1, float *dw, float *db) {
  double aw[PG_CHUNK], ab[PG_CHUNK];
  for (int64_t cb = c0; cb < c1; cb += PG_CHUNK) {
    int64_t w = c1 - cb < PG_CHUNK ? c1 - cb : PG_CHUNK;
    for (int64_t j = 0; j < w; j++) aw[j] = ab[j] = 0.0;
    for (int64_t r = 0; r < rows; r++) {
      const float *xr = x + r * cols + cb, *g = dy + r * cols + cb;
      double rs = (double)rstd[r];
      if (dw) {
        if (mean) {
          double mu = (double)mean[r];
          IVDEP for (int64_t j = 0; j < w; j++) aw[j] += (double)g[j] * (((double)xr[j] - mu) * rs);
        } else {
          IVDEP for (int64_t j = 0; j < w; j++) aw[j] += (double)g[j] * (double)xr[j] * rs;
        }
      }
      if (db) {
        IVDEP for (int64_t j = 0; j < w; j++) ab[j] += (double)g[j];
      }
    }
    if (dw)
      for (int64_t j = 0; j < w; j++) dw[cb + j] = (float)((double)dw[cb + j] + aw[j]);
    if (db)
      for (int64_t j = 0; j < w; j++) db[cb + j] = (float)((double)db[cb + j] + ab[j]);
  }
}

static void k_row_dot(const float *a, const float *b, int64_t r0, int64_t r1, int64_t cols, float *out) {
  for (int64_t r = r0; r < r1; r++) out[r] = (float)row_dot(a + r * cols, b + r * cols, cols);
}

#define RD_CHUNK 256
static void k_reduce(int op, const float *x, int64_t o, int64_t len, int64_t inner, int64_t i0, int64_t i1,
                     float *out) {
  const float *base = x + o * len * inner;
  float *dst = out + o * inner;
  if (inner == 1) {
    /* i0 == 0, i1 == 1 */
    if (op == SY_RSUM) dst[0] = (float)row_sum(base, len);
    else if (op == SY_RMAX) {
      dst[0] = row_max(base, len);
    } else {
      float acc[LANES];
      for (int j = 0; j < LANES; j++) acc[j] = INFINITY;
      int64_t i = 0;
      for (; i + LANES <= len; i += LANES)
        LANE_LOOP acc[j] = sy_min_nan(base[i + j], acc[j]);
      float m = INFINITY;
      for (int j = 0; j < LANES; j++) m = sy_min_nan(acc[j], m);
      for (; i < len; i++) m = sy_min_nan(base[i], m);
      dst[0] = m;
    }
    return;
  }
  if (op == SY_RSUM) {
    double acc[RD_CHUNK];
    for (int64_t cb = i0; cb < i1; cb += RD_CHUNK) {
      int64_t w = i1 - cb < RD_CHUNK ? i1 - cb : RD_CHUNK;
      for (int64_t j = 0; j < w; j++) acc[j] = 0.0;
      for (int64_t l = 0; l < len; l++) {
        const float *row = base + l * inner + cb;
        IVDEP for (int64_t j = 0; j < w; j++) acc[j] += (double)row[j];
      }
      for (int64_t j = 0; j < w; j++) dst[cb + j] = (float)acc[j];
    }
  } else {
    int mx = op == SY_RMAX;
    for (int64_t j = i0; j < i1; j++) dst[j] = mx ? -INFINITY : INFINITY;
    for (int64_t l = 0; l < len; l++) {
      const float *row = base + l * inner;
      if (mx) {
        IVDEP for (int64_t j = i0; j < i1; j++) dst[j] = sy_max_nan(row[j], dst[j]);
      } else {
        IVDEP for (int64_t j = i0; j < i1; j++) dst[j] = sy_min_nan(row[j], dst[j]);
      }
    }
  }
}

static void k_scatter_add(const float *src, const int32_t *idx, const float *w, int64_t nidx, int64_t cols, int64_t c0,
                          int64_t c1, float *out) {
  int64_t n = c1 - c0;
  for (int64_t i = 0; i < nidx; i++) {
    float *o = out + (int64_t)idx[i] * cols + c0;
    const float *s = src + i * cols + c0;
    if (w) {
      /* (double)w·s is exact; one rounding of the sum to float, exactly as the reference */
      double wi = (double)w[i];
      IVDEP for (int64_t c = 0; c < n; c++) o[c] = (float)((double)o[c] + wi * (double)s[c]);
    } else {
      IVDEP for (int64_t c = 0; c < n; c++) o[c] = o[c] + s[c];
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Optimizer kernels                                                                           */
/* ------------------------------------------------------------------------------------------ */

/* Σ x² in double with the fixed lane structure of row_dot (x² is exact in double, so whether the
 * compiler contracts the accumulation into an FMA does not change any rounding). */
static double k_sum_squares(const float *x, int64_t n) { return row_dot(x, x, n); }

/* Fused AdamW. Bit-identical to ReferenceBackend.adamw: per element the same double operations in
 * the same order (m = β₁·m + (1-β₁)·g, v = β₂·v + ((1-β₂)·g)·g, left to right as in JS), rounded to
 * float at the same points (p after the decay, m, v, the new p), which needs FMA contraction off
 * here: the build uses -ffp-contract=fast, and β₁·m + c₁·g fused would round once instead of twice.
 * sqrt and division are correctly rounded in both C and JS. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
#define ADAMW_BODY(DECAY, AMS)                                                      \
  IVDEP for (int64_t i = 0; i < n; i++) {                                           \
    double g = sign * (double)grad[i];                                              \
    double pv = (double)p[i];                                                       \
    if (DECAY) pv = (double)(float)(pv * decay);                                    \
    float mf = (float)(b1 * (double)m[i] + c1 * g);                                 \
    float vf = (float)(b2 * (double)v[i] + c2 * g * g);                             \
    m[i] = mf;                                                                      \
    v[i] = vf;                                                                      \
    float sf = vf;                                                                  \
    if (AMS) {                                                                      \
      float cur = vmax[i];                                                          \
      sf = vf <= cur ? cur : vf; /* !(v <= vmax) -> v: NaN wins, as torch.maximum */ \
      vmax[i] = sf;                                                                 \
    }                                                                               \
    p[i] = (float)(pv - (step * (double)mf) / (sqrt((double)sf) / bc2 + eps));      \
  }

static void k_adamw(float *SY_RESTRICT p, const float *SY_RESTRICT grad, float *SY_RESTRICT m, float *SY_RESTRICT v,
                    float *SY_RESTRICT vmax, int64_t n, const sy_adamw_hyper *h) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  const double b1 = h->beta1, b2 = h->beta2, c1 = 1.0 - h->beta1, c2 = 1.0 - h->beta2;
  const double step = h->step_size, bc2 = h->bc2_sqrt, eps = h->eps, decay = h->decay, sign = h->sign;
  const int dec = decay != 1.0; /* the reference skips p·1 (NaN decay still multiplies) */
  if (vmax) {
    if (dec) {
      ADAMW_BODY(1, 1)
    } else {
      ADAMW_BODY(0, 1)
    }
  } else {
    if (dec) {
      ADAMW_BODY(1, 0)
    } else {
      ADAMW_BODY(0, 0)
    }
  }
}
#undef ADAMW_BODY
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

const sy_ew_isa SY_EW_TABLE = {
    SY_EW_NAME,
    k_unary,
    k_unary_grad,
    k_gated,
    k_gated_grad,
    k_affine,
    k_binary_1d,
    k_softmax,
    k_softmax_grad,
    k_logsumexp,
    k_rms_norm,
    k_rms_norm_grad_dx,
    k_layer_norm,
    k_layer_norm_grad_dx,
    k_norm_param_grad,
    k_row_dot,
    k_reduce,
    k_scatter_add,
    k_sum_squares,
    k_adamw,
};
