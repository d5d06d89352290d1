/*
 * Mixture of LoRA experts at one Linear for a few token rows (decoding), router included, in one
 * call: for each row x_t of x [rows, d]
 *   l = R x_t (R [n, d]); pick k adapters (top-k of l, ties to the lower index; or all n);
 *   gates from the softmax of l (renormalised over the k picked, or not);
 *   y_t += Σ_j gate_j · scale_e · B_e (A_e x_t)       (e = the j-th pick)
 * A packs every adapter's A_e [r_e, d] row after row, B every B_e [out, r_e] block after block.
 * Single-threaded: a decoding step has a handful of rows and ~n·d + 4·k·r·d flops per row, far
 * below what a thread hand-off costs. Dot products use 8 independent partial sums (latency, and
 * vectorisable without reassociation flags); exponentials in double like the reference backend.
 */
#include <math.h>
#include <stdlib.h>

#include "lora.h"

static float dot8(const float *a, const float *b, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
  float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; i < n; i++) t += a[i] * b[i];
  return t;
}

void sy_op_lora_mixture(const float *x, const float *router, const float *A, const float *B, const float *scales,
                        int64_t rows, int64_t d, int64_t out, int64_t n, int64_t k, int mode, const int32_t *ranks,
                        int32_t *experts, float *gates, float *logits, float *y) {
  int64_t maxR = 0;
  for (int64_t e = 0; e < n; e++) if (ranks[e] > maxR) maxR = ranks[e];
  float hs[64], *h = maxR <= 64 ? hs : (float *)malloc((size_t)maxR * sizeof(float));
  float ls[64], *l = n <= 64 ? ls : (float *)malloc((size_t)n * sizeof(float));
  int64_t os[65], *offs = n < 65 ? os : (int64_t *)malloc((size_t)(n + 1) * sizeof(int64_t));
  if (!h || !l || !offs) goto done; /* allocation failure: nothing written */
  offs[0] = 0;
  for (int64_t e = 0; e < n; e++) offs[e + 1] = offs[e] + ranks[e];
  for (int64_t t = 0; t < rows; t++) {
    const float *xt = x + t * d;
    int32_t *ex = experts + t * k;
    float *g = gates + t * k;
    if (mode == SY_LORA_ALL) {
      for (int64_t e = 0; e < n; e++) {
        ex[e] = (int32_t)e;
        g[e] = 1.0f;
      }
    } else {
      float m = -INFINITY;
      for (int64_t e = 0; e < n; e++) {
        l[e] = dot8(router + e * d, xt, d);
        if (l[e] > m) m = l[e];
      }
      if (logits) for (int64_t e = 0; e < n; e++) logits[t * n + e] = l[e];
      if (mode == SY_LORA_DENSE) {
        double z = 0;
        for (int64_t e = 0; e < n; e++) z += exp((double)l[e] - m);
        for (int64_t e = 0; e < n; e++) {
          ex[e] = (int32_t)e;
          g[e] = (float)(exp((double)l[e] - m) / z);
        }
      } else {
        /* Insertion into the k best; an equal value never passes an earlier one (lower index wins). */
        for (int64_t e = 0; e < n; e++) {
          float v = l[e];
          int64_t filled = e < k ? e : k;
          if (filled == k && !(v > l[ex[k - 1]])) continue;
          int64_t j = filled == k ? k - 1 : filled;
          while (j > 0 && v > l[ex[j - 1]]) {
            ex[j] = ex[j - 1];
            j--;
          }
          ex[j] = (int32_t)e;
        }
        double s = 0;
        for (int64_t j = 0; j < k; j++) s += exp((double)l[ex[j]] - m);
        if (mode == SY_LORA_TOPK_NORM) {
          for (int64_t j = 0; j < k; j++) g[j] = k == 1 ? 1.0f : (float)(exp((double)l[ex[j]] - m) / s);
        } else {
          double z = 0;
          for (int64_t e = 0; e < n; e++) z += exp((double)l[e] - m);
          for (int64_t j = 0; j < k; j++) g[j] = (float)(exp((double)l[ex[j]] - m) / z);
        }
      }
    }
    float *yt = y + t * out;
    for (int64_t j = 0; j < k; j++) {
      int64_t e = ex[j], r = ranks[e];
      if (r == 0) continue;
      float w = g[j] * scales[e];
      const float *Ae = A + offs[e] * d, *Be = B + offs[e] * out;
      for (int64_t i = 0; i < r; i++) h[i] = dot8(Ae + i * d, xt, d) * w;
      /* y[o] += B_e[o, :] · h, eight outputs at a time (eight independent sums: r is short). */
      int64_t o = 0;
      for (; o + 8 <= out; o += 8) {
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        const float *bo = Be + o * r;
        for (int64_t i = 0; i < r; i++)
          for (int q = 0; q < 8; q++) acc[q] += bo[q * r + i] * h[i];
        for (int q = 0; q < 8; q++) yt[o + q] += acc[q];
      }
      for (; o < out; o++) {
        const float *bo = Be + o * r;
        float acc = 0;
        for (int64_t i = 0; i < r; i++) acc += bo[i] * h[i];
        yt[o] += acc;
      }
    }
  }
done:
  if (h != hs) free(h);
  if (l != ls) free(l);
  if (offs != os) free(offs);
}
