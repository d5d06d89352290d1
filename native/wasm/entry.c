/*
 * WebAssembly entry points for the shared C kernels (native/gemm.c with gemm_simd128.c, native/ops.c,
 * native/ew_impl.h via ew_scalar.c). This is the wasm counterpart of native/addon.c: pointers
 * are byte offsets into the module's linear memory, and arguments were already validated by the
 * TypeScript side (src/backend/wasm.ts), exactly as addon.c validates before calling the same
 * sy_op_* drivers.
 */
#include "../sy.h"

#include <stdlib.h>

#define EXPORT(name) __attribute__((export_name(#name)))

EXPORT(sy_wasm_alloc) void *sy_wasm_alloc(int32_t bytes) { return malloc((size_t)(uint32_t)bytes); }
EXPORT(sy_wasm_free) void sy_wasm_free(void *p) { free(p); }
EXPORT(sy_wasm_threads) int32_t sy_wasm_threads(void) { return sy_threads(); }
EXPORT(sy_wasm_set_threads) int32_t sy_wasm_set_threads(int32_t n) { return sy_set_threads(n); }
EXPORT(sy_wasm_default_threads) int32_t sy_wasm_default_threads(void) { return sy_default_threads(); }

/* params: ntasks x SY_GEMM_PARAMS int32 as in the Backend interface; bufs: the buffers' base addresses. */
EXPORT(sy_wasm_gemm) void sy_wasm_gemm(const int32_t *params, int32_t ntasks, float *const *bufs) {
  sy_gemm_task stack[64];
  sy_gemm_task *tasks = ntasks <= 64 ? stack : (sy_gemm_task *)malloc(sizeof(sy_gemm_task) * (size_t)ntasks);
  if (!tasks) abort();
  for (int32_t t = 0; t < ntasks; t++) {
    sy_gemm_task_decode(params + (int64_t)t * SY_GEMM_PARAMS, t, bufs, &tasks[t]);
    tasks[t].stream = 0; /* no cache-bypassing stores in wasm */
  }
  sy_gemm_run(tasks, ntasks);
  if (tasks != stack) free(tasks);
}

EXPORT(sy_wasm_unary) void sy_wasm_unary(int32_t op, const float *x, float *out, int32_t n) { sy_op_unary(op, x, out, n); }
EXPORT(sy_wasm_unary_grad)
void sy_wasm_unary_grad(int32_t op, const float *x, const float *y, const float *dy, float *dx, int32_t n) {
  sy_op_unary_grad(op, x, y, dy, dx, n);
}
EXPORT(sy_wasm_gated) void sy_wasm_gated(int32_t act, const float *a, const float *b, float *out, int32_t n) {
  sy_op_gated(act, a, b, out, n);
}
EXPORT(sy_wasm_gated_grad)
void sy_wasm_gated_grad(int32_t act, const float *a, const float *b, const float *dy, float *da, float *db, int32_t n) {
  sy_op_gated_grad(act, a, b, dy, da, db, n);
}
EXPORT(sy_wasm_affine) void sy_wasm_affine(const float *x, float scale, float shift, float *out, int32_t n) {
  sy_op_affine(x, scale, shift, out, n);
}

EXPORT(sy_wasm_binary)
void sy_wasm_binary(int32_t op, const float *a, const int32_t *as, const float *b, const int32_t *bs, float *out,
                    const int32_t *shape, int32_t nd) {
  int64_t a64[SY_MAX_DIMS], b64[SY_MAX_DIMS], s64[SY_MAX_DIMS];
  for (int i = 0; i < nd; i++) {
    a64[i] = as[i];
    b64[i] = bs[i];
    s64[i] = shape[i];
  }
  sy_op_binary(op, a, a64, b, b64, out, s64, nd);
}

EXPORT(sy_wasm_reduce)
void sy_wasm_reduce(int32_t op, const float *x, int32_t outer, int32_t len, int32_t inner, float *out) {
  sy_op_reduce(op, x, outer, len, inner, out);
}
EXPORT(sy_wasm_softmax) void sy_wasm_softmax(const float *x, int32_t rows, int32_t cols, int32_t lg, float *out) {
  sy_op_softmax(x, rows, cols, lg, out);
}
EXPORT(sy_wasm_softmax_grad)
void sy_wasm_softmax_grad(const float *y, const float *dy, int32_t rows, int32_t cols, int32_t lg, float *dx) {
  sy_op_softmax_grad(y, dy, rows, cols, lg, dx);
}
EXPORT(sy_wasm_logsumexp) void sy_wasm_logsumexp(const float *x, int32_t rows, int32_t cols, float *out) {
  sy_op_logsumexp(x, rows, cols, out);
}
EXPORT(sy_wasm_rms_norm)
void sy_wasm_rms_norm(const float *x, const float *w, int32_t rows, int32_t cols, float eps, float *out, float *rstd) {
  sy_op_rms_norm(x, w, rows, cols, eps, out, rstd);
}
EXPORT(sy_wasm_rms_norm_grad)
void sy_wasm_rms_norm_grad(const float *x, const float *w, const float *rstd, const float *dy, int32_t rows, int32_t cols,
                           float *dx, float *dw) {
  sy_op_rms_norm_grad(x, w, rstd, dy, rows, cols, dx, dw);
}
EXPORT(sy_wasm_layer_norm)
void sy_wasm_layer_norm(const float *x, const float *w, const float *b, int32_t rows, int32_t cols, float eps, float *out,
                        float *mean, float *rstd) {
  sy_op_layer_norm(x, w, b, rows, cols, eps, out, mean, rstd);
}
EXPORT(sy_wasm_layer_norm_grad)
void sy_wasm_layer_norm_grad(const float *x, const float *w, const float *mean, const float *rstd, const float *dy,
                             int32_t rows, int32_t cols, float *dx, float *dw, float *db) {
  sy_op_layer_norm_grad(x, w, mean, rstd, dy, rows, cols, dx, dw, db);
}
EXPORT(sy_wasm_permute)
void sy_wasm_permute(const float *x, const int32_t *shape, const int32_t *perm, int32_t nd, float *out) {
  int64_t s64[SY_MAX_DIMS];
  int p[SY_MAX_DIMS];
  for (int i = 0; i < nd; i++) {
    s64[i] = shape[i];
    p[i] = perm[i];
  }
  sy_op_permute(x, s64, p, nd, out);
}
EXPORT(sy_wasm_gather_rows)
void sy_wasm_gather_rows(const float *src, const int32_t *idx, int32_t nidx, int32_t cols, float *out) {
  sy_op_gather_rows(src, idx, nidx, cols, out);
}
EXPORT(sy_wasm_scatter_add_rows)
void sy_wasm_scatter_add_rows(const float *src, const int32_t *idx, const float *w, int32_t nidx, int32_t cols, float *out,
                              int32_t out_rows) {
  sy_op_scatter_add_rows(src, idx, w, nidx, cols, out, out_rows);
}
EXPORT(sy_wasm_row_dot) void sy_wasm_row_dot(const float *a, const float *b, int32_t rows, int32_t cols, float *out) {
  sy_op_row_dot(a, b, rows, cols, out);
}
EXPORT(sy_wasm_sum_squares) double sy_wasm_sum_squares(const float *x, int32_t n) { return sy_op_sum_squares(x, n); }
EXPORT(sy_wasm_adamw)
void sy_wasm_adamw(float *p, const float *g, float *m, float *v, float *vmax, int32_t n, double beta1, double beta2,
                   double step_size, double bc2_sqrt, double eps, double decay, double sign) {
  sy_adamw_hyper h = {beta1, beta2, step_size, bc2_sqrt, eps, decay, sign};
  sy_op_adamw(p, g, m, v, vmax, n, &h);
}
