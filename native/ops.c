/*
 * Parallel drivers for the element-wise and row-wise kernels.
 *
 * Work is cut into items whose boundaries depend only on the problem (fixed chunk sizes, whole
 * rows, fixed column blocks), never on the thread count, and each output element is produced by
 * exactly one item: results are bit-identical across runs and thread counts. Small problems run
 * inline on the calling thread (no dispatch).
 */
#include "sy.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_LIGHT 32768 /* cheap element-wise ops: memory bound */
#define CHUNK_HEAVY 8192  /* transcendental ops */
#define CHUNK_POW 1024    /* scalar libm pow */
#define ROW_WORK 16384    /* elements per row-block item */
#define ROW_WORK_EXP 4096 /* the same for rows with an exp per element (softmax, logsumexp) */
#define ROW_WORK_TOPK 4096 /* the same for top-k rows (a compare per element, an insertion sometimes) */
#define PAR_MIN_LIGHT 65536
#define PAR_MIN_HEAVY 16384

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Run fn over [0, n) in fixed chunks; parallel only if n >= par_min. */
static void run_chunks(int64_t n, int64_t chunk, int64_t par_min, sy_task_fn fn, void *ctx) {
  int64_t items = cdiv(n, chunk);
  if (n < par_min || items <= 1) {
    for (int64_t i = 0; i < items; i++) fn(ctx, i, 0);
    return;
  }
  sy_parallel_for(items, fn, ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* element-wise                                                                              */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
  int op;
  const float *x, *y, *dy, *b;
  float *out, *out2;
  float scale, shift;
  int64_t n, chunk;
} ew_ctx;

static inline void chunk_range(const ew_ctx *c, int64_t item, int64_t *lo, int64_t *len) {
  *lo = item * c->chunk;
  *len = min64(c->chunk, c->n - *lo);
}

static int unary_heavy(int op) {
  switch (op) {
    case SY_NEG: case SY_ABS: case SY_RELU: case SY_SQUARE: case SY_SIGN: return 0;
    default: return 1;
  }
}

static void unary_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const ew_ctx *c = (const ew_ctx *)vc;
  int64_t lo, len;
  chunk_range(c, item, &lo, &len);
  sy_ew_impl->unary(c->op, c->x + lo, c->out + lo, len);
}

void sy_op_unary(int op, const float *x, float *out, int64_t n) {
  int heavy = unary_heavy(op);
  ew_ctx c = {.op = op, .x = x, .out = out, .n = n, .chunk = heavy ? CHUNK_HEAVY : CHUNK_LIGHT};
  run_chunks(n, c.chunk, heavy ? PAR_MIN_HEAVY : PAR_MIN_LIGHT, unary_item, &c);
}

static void unary_grad_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const ew_ctx *c = (const ew_ctx *)vc;
  int64_t lo, len;
  chunk_range(c, item, &lo, &len);
  sy_ew_impl->unary_grad(c->op, c->x + lo, c->y + lo, c->dy + lo, c->out + lo, len);
}

void sy_op_unary_grad(int op, const float *x, const float *y, const float *dy, float *dx, int64_t n) {
  int heavy = op == SY_GELU || op == SY_GELU_TANH || op == SY_SILU || op == SY_SOFTPLUS;
  ew_ctx c = {.op = op, .x = x, .y = y, .dy = dy, .out = dx, .n = n, .chunk = heavy ? CHUNK_HEAVY : CHUNK_LIGHT};
  run_chunks(n, c.chunk, heavy ? PAR_MIN_HEAVY : PAR_MIN_LIGHT, unary_grad_item, &c);
}

static void gated_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const ew_ctx *c = (const ew_ctx *)vc;
  int64_t lo, len;
  chunk_range(c, item, &lo, &len);
  sy_ew_impl->gated(c->op, c->x + lo, c->b + lo, c->out + lo, len);
}

void sy_op_gated(int act, const float *a, const float *b, float *out, int64_t n) {
  int heavy = act != SY_RELU;
  ew_ctx c = {.op = act, .x = a, .b = b, .out = out, .n = n, .chunk = heavy ? CHUNK_HEAVY : CHUNK_LIGHT};
  run_chunks(n, c.chunk, heavy ? PAR_MIN_HEAVY : PAR_MIN_LIGHT, gated_item, &c);
}

static void gated_grad_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const ew_ctx *c = (const ew_ctx *)vc;
  int64_t lo, len;
  chunk_range(c, item, &lo, &len);
  sy_ew_impl->gated_grad(c->op, c->x + lo, c->b + lo, c->dy + lo, c->out + lo, c->out2 + lo, len);
}

void sy_op_gated_grad(int act, const float *a, const float *b, const float *dy, float *da, float *db, int64_t n) {
  int heavy = act != SY_RELU;
  ew_ctx c = {.op = act, .x = a, .b = b, .dy = dy, .out = da, .out2 = db, .n = n,
              .chunk = heavy ? CHUNK_HEAVY : CHUNK_LIGHT};
  run_chunks(n, c.chunk, heavy ? PAR_MIN_HEAVY : PAR_MIN_LIGHT, gated_grad_item, &c);
}

static void affine_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const ew_ctx *c = (const ew_ctx *)vc;
  int64_t lo, len;
  chunk_range(c, item, &lo, &len);
  sy_ew_impl->affine(c->x + lo, c->scale, c->shift, c->out + lo, len);
}

void sy_op_affine(const float *x, float scale, float shift, float *out, int64_t n) {
  ew_ctx c = {.x = x, .out = out, .n = n, .scale = scale, .shift = shift, .chunk = CHUNK_LIGHT};
  run_chunks(n, c.chunk, PAR_MIN_LIGHT, affine_item, &c);
}

/* ---------------------------------------------------------------------------------------- */
/* binary with strides                                                                       */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
  int op, nd;
  const float *a, *b;
  float *out;
  int64_t shape[SY_MAX_DIMS], as[SY_MAX_DIMS], bs[SY_MAX_DIMS];
  int64_t n, chunk;
} bin_ctx;

static void binary_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const bin_ctx *c = (const bin_ctx *)vc;
  int64_t lo = item * c->chunk, hi = min64(c->n, lo + c->chunk);
  int nd = c->nd, last = nd - 1;
  int64_t inner = c->shape[last];
  /* odometer position of lo */
  int64_t idx[SY_MAX_DIMS];
  int64_t rem = lo, ao = 0, bo = 0;
  for (int d = last; d >= 0; d--) {
    idx[d] = rem % c->shape[d];
    rem /= c->shape[d];
    ao += idx[d] * c->as[d];
    bo += idx[d] * c->bs[d];
  }
  int64_t pos = lo;
  while (pos < hi) {
    int64_t run = min64(inner - idx[last], hi - pos);
    sy_ew_impl->binary_1d(c->op, c->a + ao, c->as[last], c->b + bo, c->bs[last], c->out + pos, run);
    pos += run;
    idx[last] += run;
    ao += run * c->as[last];
    bo += run * c->bs[last];
    for (int d = last; d > 0 && idx[d] == c->shape[d]; d--) {
      ao -= idx[d] * c->as[d];
      bo -= idx[d] * c->bs[d];
      idx[d] = 0;
      idx[d - 1]++;
      ao += c->as[d - 1];
      bo += c->bs[d - 1];
    }
  }
}

void sy_op_binary(int op, const float *a, const int64_t *as, const float *b, const int64_t *bs, float *out,
                  const int64_t *shape, int nd) {
  bin_ctx c;
  c.op = op;
  c.a = a;
  c.b = b;
  c.out = out;
  /* Drop size-1 dims, then merge dims that are jointly contiguous for a and b (out always is). */
  int k = 0;
  int64_t n = 1;
  for (int d = 0; d < nd; d++) {
    n *= shape[d];
    if (shape[d] == 1) continue;
    c.shape[k] = shape[d];
    c.as[k] = as[d];
    c.bs[k] = bs[d];
    k++;
  }
  if (n == 0) return;
  if (k == 0) {
    c.shape[0] = 1;
    c.as[0] = c.bs[0] = 0;
    k = 1;
  }
  int m = 0;
  for (int d = 1; d < k; d++) {
    if (c.as[m] == c.as[d] * c.shape[d] && c.bs[m] == c.bs[d] * c.shape[d]) {
      c.shape[m] *= c.shape[d];
      c.as[m] = c.as[d];
      c.bs[m] = c.bs[d];
    } else {
      m++;
      c.shape[m] = c.shape[d];
      c.as[m] = c.as[d];
      c.bs[m] = c.bs[d];
    }
  }
  c.nd = m + 1;
  c.n = n;
  c.chunk = op == SY_POW ? CHUNK_POW : CHUNK_LIGHT;
  run_chunks(n, c.chunk, op == SY_POW ? 2 * CHUNK_POW : PAR_MIN_LIGHT, binary_item, &c);
}

/* ---------------------------------------------------------------------------------------- */
/* row-wise                                                                                  */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
  const float *x, *y, *w, *b, *dy, *mean, *rstd;
  float *out, *out2, *out3;
  int64_t rows, cols, rows_per_item;
  int flag;
  float eps;
  int kind;
} row_ctx;

enum { R_SOFTMAX, R_SOFTMAX_GRAD, R_LSE, R_RMS, R_RMS_DX, R_LN, R_LN_DX, R_ROWDOT };

static void row_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const row_ctx *c = (const row_ctx *)vc;
  int64_t r0 = item * c->rows_per_item, r1 = min64(c->rows, r0 + c->rows_per_item);
  const sy_ew_isa *k = sy_ew_impl;
  switch (c->kind) {
    case R_SOFTMAX: k->softmax(c->x, r0, r1, c->cols, c->flag, c->out); break;
    case R_SOFTMAX_GRAD: k->softmax_grad(c->y, c->dy, r0, r1, c->cols, c->flag, c->out); break;
    case R_LSE: k->logsumexp(c->x, r0, r1, c->cols, c->out); break;
    case R_RMS: k->rms_norm(c->x, c->w, r0, r1, c->cols, c->eps, c->out, c->out2); break;
    case R_RMS_DX: k->rms_norm_grad_dx(c->x, c->w, c->rstd, c->dy, r0, r1, c->cols, c->out); break;
    case R_LN: k->layer_norm(c->x, c->w, c->b, r0, r1, c->cols, c->eps, c->out, c->out2, c->out3); break;
    case R_LN_DX: k->layer_norm_grad_dx(c->x, c->w, c->mean, c->rstd, c->dy, r0, r1, c->cols, c->out); break;
    case R_ROWDOT: k->row_dot(c->x, c->y, r0, r1, c->cols, c->out); break;
  }
}

static void run_rows(row_ctx *c) {
  if (c->rows <= 0) return;
  int64_t cols = c->cols > 0 ? c->cols : 1;
  const int64_t work = c->kind == R_SOFTMAX || c->kind == R_LSE ? ROW_WORK_EXP : ROW_WORK;
  c->rows_per_item = max64(1, work / cols);
  run_chunks(c->rows, c->rows_per_item, cdiv(2 * work, cols), row_item, c);
}

void sy_op_softmax(const float *x, int64_t rows, int64_t cols, int log, float *out) {
  row_ctx c = {.x = x, .out = out, .rows = rows, .cols = cols, .flag = log, .kind = R_SOFTMAX};
  run_rows(&c);
}

void sy_op_softmax_grad(const float *y, const float *dy, int64_t rows, int64_t cols, int log, float *dx) {
  row_ctx c = {.y = y, .dy = dy, .out = dx, .rows = rows, .cols = cols, .flag = log, .kind = R_SOFTMAX_GRAD};
  run_rows(&c);
}

void sy_op_logsumexp(const float *x, int64_t rows, int64_t cols, float *out) {
  row_ctx c = {.x = x, .out = out, .rows = rows, .cols = cols, .kind = R_LSE};
  run_rows(&c);
}

void sy_op_rms_norm(const float *x, const float *w, int64_t rows, int64_t cols, float eps, float *out, float *rstd) {
  row_ctx c = {.x = x, .w = w, .out = out, .out2 = rstd, .rows = rows, .cols = cols, .eps = eps, .kind = R_RMS};
  run_rows(&c);
}

void sy_op_layer_norm(const float *x, const float *w, const float *b, int64_t rows, int64_t cols, float eps,
                      float *out, float *mean, float *rstd) {
  row_ctx c = {.x = x, .w = w, .b = b, .out = out, .out2 = mean, .out3 = rstd, .rows = rows, .cols = cols,
               .eps = eps, .kind = R_LN};
  run_rows(&c);
}

void sy_op_row_dot(const float *a, const float *b, int64_t rows, int64_t cols, float *out) {
  row_ctx c = {.x = a, .y = b, .out = out, .rows = rows, .cols = cols, .kind = R_ROWDOT};
  run_rows(&c);
}

/* Top-k per row (a router's expert choice): insertion into the row's sorted k best, found by
 * binary search. `beats` is a strict order with NaN above every number and ties to the earlier
 * column, so along the sorted buffer it is false, then true: the binary search is exact. Most
 * entries lose to the k-th best in one comparison. */
typedef struct {
  const float *x;
  float *values;
  int32_t *indices;
  int64_t rows, cols, k, rows_per_item;
} topk_ctx;

static inline int topk_beats(float v, float u) { return v > u || (v != v && u == u); }

static void topk_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const topk_ctx *c = (const topk_ctx *)vc;
  const int64_t r0 = item * c->rows_per_item, r1 = min64(c->rows, r0 + c->rows_per_item), k = c->k;
  for (int64_t r = r0; r < r1; r++) {
    const float *x = c->x + r * c->cols;
    float *val = c->values + r * k;
    int32_t *ind = c->indices + r * k;
    int64_t filled = 0;
    for (int64_t j = 0; j < c->cols; j++) {
      const float v = x[j];
      if (filled == k && !topk_beats(v, val[k - 1])) continue;
      int64_t lo = 0, hi = filled; /* first position whose entry v beats */
      while (lo < hi) {
        int64_t mid = (lo + hi) >> 1;
        if (topk_beats(v, val[mid])) hi = mid;
        else lo = mid + 1;
      }
      int64_t last = filled < k ? filled++ : k - 1; /* a full buffer drops its k-th */
      for (int64_t q = last; q > lo; q--) {
        val[q] = val[q - 1];
        ind[q] = ind[q - 1];
      }
      val[lo] = v;
      ind[lo] = (int32_t)j;
    }
  }
}

void sy_op_topk_rows(const float *x, int64_t rows, int64_t cols, int64_t k, float *values, int32_t *indices) {
  if (rows <= 0 || k <= 0) return;
  const int64_t w = max64(1, cols);
  topk_ctx c = {x, values, indices, rows, cols, k, max64(1, ROW_WORK_TOPK / w)};
  run_chunks(rows, c.rows_per_item, cdiv(2 * ROW_WORK_TOPK, w), topk_item, &c);
}

/* Rotary embedding: blocks of ROT_ROWS rows per item. Each output pair is computed in double from
 * exact float products and rounded once, as ReferenceBackend.rotary does, so results match it bit
 * for bit whatever the ISA or thread count. */
typedef struct {
  const float *x, *cos_t, *sin_t;
  float *out;
  int64_t rows, seq, heads, dim, start;
  int inverse;
} rot_ctx;

#define ROT_ROWS 64

static void rot_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const rot_ctx *c = (const rot_ctx *)vc;
  const int64_t half = c->dim / 2, r1 = min64(c->rows, (item + 1) * ROT_ROWS);
  const double sg = c->inverse ? -1.0 : 1.0;
  for (int64_t r = item * ROT_ROWS; r < r1; r++) {
    const int64_t pos = c->start + (r / c->heads) % c->seq;
    const float *x = c->x + r * c->dim, *cs = c->cos_t + pos * half, *sn = c->sin_t + pos * half;
    float *o = c->out + r * c->dim;
    for (int64_t i = 0; i < half; i++) {
      const double x1 = x[i], x2 = x[half + i], co = cs[i], si = sg * (double)sn[i];
      const double y1 = x1 * co - x2 * si, y2 = x2 * co + x1 * si;
      o[i] = (float)y1;
      o[half + i] = (float)y2;
    }
  }
}

void sy_op_rotary(const float *x, float *out, const float *cos_t, const float *sin_t, int64_t rows, int64_t seq,
                  int64_t heads, int64_t dim, int64_t start, int inverse) {
  if (rows <= 0 || dim <= 0) return;
  rot_ctx c = {x, cos_t, sin_t, out, rows, seq, heads, dim, start, inverse};
  sy_parallel_for((rows + ROT_ROWS - 1) / ROT_ROWS, rot_item, &c);
}

/* Column-parallel weight/bias gradients: each item owns a fixed column block and sums all rows
 * in increasing order (exactly the reference's order, in double). */
typedef struct {
  const float *x, *mean, *rstd, *dy;
  float *dw, *db;
  int64_t rows, cols, block;
} pg_ctx;

#define PG_BLOCK 64

static void pg_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const pg_ctx *c = (const pg_ctx *)vc;
  int64_t c0 = item * c->block, c1 = min64(c->cols, c0 + c->block);
  sy_ew_impl->norm_param_grad(c->x, c->mean, c->rstd, c->dy, c->rows, c->cols, c0, c1, c->dw, c->db);
}

static void run_param_grad(pg_ctx *c) {
  if (!c->dw && !c->db) return;
  if (c->rows <= 0 || c->cols <= 0) return;
  c->block = PG_BLOCK;
  int64_t items = cdiv(c->cols, c->block);
  if (c->rows * c->cols < 2 * ROW_WORK || items <= 1) {
    for (int64_t i = 0; i < items; i++) pg_item(c, i, 0);
    return;
  }
  sy_parallel_for(items, pg_item, c);
}

void sy_op_rms_norm_grad(const float *x, const float *w, const float *rstd, const float *dy, int64_t rows,
                         int64_t cols, float *dx, float *dw) {
  /* weight gradient first: it reads dy, so dx may alias dy */
  if (dw && w) {
    pg_ctx p = {.x = x, .mean = NULL, .rstd = rstd, .dy = dy, .dw = dw, .db = NULL, .rows = rows, .cols = cols};
    run_param_grad(&p);
  }
  row_ctx c = {.x = x, .w = w, .rstd = rstd, .dy = dy, .out = dx, .rows = rows, .cols = cols, .kind = R_RMS_DX};
  run_rows(&c);
}

void sy_op_layer_norm_grad(const float *x, const float *w, const float *mean, const float *rstd, const float *dy,
                           int64_t rows, int64_t cols, float *dx, float *dw, float *db) {
  /* weight/bias gradients first: they read dy, so dx may alias dy */
  pg_ctx p = {.x = x, .mean = mean, .rstd = rstd, .dy = dy, .dw = (dw && w) ? dw : NULL, .db = db, .rows = rows,
              .cols = cols};
  run_param_grad(&p);
  row_ctx c = {.x = x, .w = w, .mean = mean, .rstd = rstd, .dy = dy, .out = dx, .rows = rows, .cols = cols,
               .kind = R_LN_DX};
  run_rows(&c);
}

/* ---------------------------------------------------------------------------------------- */
/* reduce                                                                                    */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
  int op;
  const float *x;
  float *out;
  int64_t outer, len, inner, iblock, nib, opi; /* opi: outers per item when inner == 1 */
} red_ctx;

static void reduce_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const red_ctx *c = (const red_ctx *)vc;
  if (c->inner == 1) {
    int64_t o0 = item * c->opi, o1 = min64(c->outer, o0 + c->opi);
    for (int64_t o = o0; o < o1; o++) sy_ew_impl->reduce(c->op, c->x, o, c->len, 1, 0, 1, c->out);
    return;
  }
  int64_t o = item / c->nib, ib = item % c->nib;
  int64_t i0 = ib * c->iblock, i1 = min64(c->inner, i0 + c->iblock);
  sy_ew_impl->reduce(c->op, c->x, o, c->len, c->inner, i0, i1, c->out);
}

void sy_op_reduce(int op, const float *x, int64_t outer, int64_t len, int64_t inner, float *out) {
  if (outer <= 0 || inner <= 0) return;
  red_ctx c = {.op = op, .x = x, .out = out, .outer = outer, .len = len, .inner = inner};
  int64_t items;
  if (inner == 1) {
    c.opi = max64(1, ROW_WORK / max64(1, len));
    items = cdiv(outer, c.opi);
  } else {
    c.iblock = 1024;
    c.nib = cdiv(inner, c.iblock);
    items = outer * c.nib;
  }
  if (outer * len * inner < 2 * ROW_WORK || items <= 1) {
    for (int64_t i = 0; i < items; i++) reduce_item(&c, i, 0);
    return;
  }
  sy_parallel_for(items, reduce_item, &c);
}

/* ---------------------------------------------------------------------------------------- */
/* gather / scatter                                                                          */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
  const float *src, *w;
  const int32_t *idx;
  float *out;
  int64_t nidx, cols, per_item, out_rows, nparts;
  const int64_t *start; /* row split: CSR of the sources of each output row */
  const int32_t *order;
} gs_ctx;

/* Rows of `cols` floats per item of a row-wise light op (~CHUNK_LIGHT floats). Such an op runs in
 * parallel from PAR_MIN_LIGHT floats in all, i.e. from cdiv(PAR_MIN_LIGHT, cols) rows. */
static int64_t rows_per_chunk(int64_t cols) { return max64(1, CHUNK_LIGHT / cols); }

static void gather_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const gs_ctx *c = (const gs_ctx *)vc;
  int64_t i0 = item * c->per_item, i1 = min64(c->nidx, i0 + c->per_item);
  for (int64_t i = i0; i < i1; i++)
    memcpy(c->out + i * c->cols, c->src + (int64_t)c->idx[i] * c->cols, sizeof(float) * (size_t)c->cols);
}

void sy_op_gather_rows(const float *src, const int32_t *idx, int64_t nidx, int64_t cols, float *out) {
  if (nidx <= 0 || cols <= 0) return;
  gs_ctx c = {.src = src, .idx = idx, .out = out, .nidx = nidx, .cols = cols, .per_item = rows_per_chunk(cols)};
  run_chunks(nidx, c.per_item, cdiv(PAR_MIN_LIGHT, cols), gather_item, &c);
}

/* gatherRowsScaled: rows [i0, i1) of out = w ⊙ g[idx] and dot = rowDot(g[idx], dot_with), each
 * value by the same kernels (and so the same arithmetic) as gather + rowDot + broadcast multiply. */
typedef struct {
  const float *g, *w, *dot_with;
  const int32_t *idx;
  float *out, *dot;
  int64_t nidx, cols, per_item;
} grs_ctx;

static void gather_scaled_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const grs_ctx *c = (const grs_ctx *)vc;
  int64_t i0 = item * c->per_item, i1 = min64(c->nidx, i0 + c->per_item);
  for (int64_t i = i0; i < i1; i++) {
    const float *row = c->g + (int64_t)c->idx[i] * c->cols;
    if (c->dot) sy_ew_impl->row_dot(row, c->dot_with + i * c->cols, 0, 1, c->cols, c->dot + i);
    sy_ew_impl->binary_1d(SY_MUL, row, 1, c->w + i, 0, c->out + i * c->cols, c->cols);
  }
}

void sy_op_gather_rows_scaled(const float *g, const int32_t *idx, int64_t nidx, int64_t cols, const float *w, float *out,
                              const float *dot_with, float *dot) {
  if (nidx <= 0) return;
  grs_ctx c = {.g = g, .w = w, .dot_with = dot_with, .idx = idx, .out = out, .dot = dot, .nidx = nidx, .cols = cols};
  if (cols <= 0) { /* empty rows: their dot products are 0 */
    if (dot) memset(dot, 0, sizeof(float) * (size_t)nidx);
    return;
  }
  c.per_item = rows_per_chunk(cols);
  run_chunks(nidx, c.per_item, cdiv(PAR_MIN_LIGHT, cols), gather_scaled_item, &c);
}

/* Column split: item owns columns [c0, c1) of every output row. */
static void scatter_cols_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const gs_ctx *c = (const gs_ctx *)vc;
  int64_t c0 = item * c->per_item, c1 = min64(c->cols, c0 + c->per_item);
  sy_ew_impl->scatter_add(c->src, c->idx, c->w, c->nidx, c->cols, c0, c1, c->out);
}

/* Row split (rows under 1024 floats): item owns output rows [r0, r1); row r's sources are
 * order[start[r] .. start[r+1]), a stable counting sort of idx, so each row adds its sources in
 * increasing i exactly as the serial kernel does, and the split costs O(nidx) in all instead of a
 * scan per item. */
static void scatter_rows_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const gs_ctx *c = (const gs_ctx *)vc;
  int64_t r0 = item * c->per_item, r1 = min64(c->out_rows, r0 + c->per_item);
  /* First touch of each receiving row's pages by a write (an atomic OR of 0, which changes no
   * value): a fresh, never-touched output (the layer's result is a new buffer every step) then
   * takes one page fault per page, not a read fault onto the shared zero page followed by a
   * copy-on-write fault at the first store (1036 -> 524 faults at 2048 x 256). */
  for (int64_t r = r0; r < r1; r++) {
    if (c->start[r + 1] == c->start[r]) continue;
    uint32_t *row = (uint32_t *)(c->out + r * c->cols);
    for (int64_t o = 0; o < c->cols; o += 1024) __atomic_fetch_or(row + o, 0u, __ATOMIC_RELAXED);
    __atomic_fetch_or(row + c->cols - 1, 0u, __ATOMIC_RELAXED);
  }
  for (int64_t q = c->start[r0]; q < c->start[r1]; q++) {
    int64_t i = c->order[q]; /* rows in order, each row's sources in increasing i */
    sy_ew_impl->scatter_add(c->src + i * c->cols, c->idx + i, c->w ? c->w + i : NULL, 1, c->cols, 0, c->cols, c->out);
  }
}

void sy_op_scatter_add_rows(const float *src, const int32_t *idx, const float *w, int64_t nidx, int64_t cols,
                            float *out, int64_t out_rows) {
  if (nidx <= 0 || cols <= 0) return;
  gs_ctx c = {.src = src, .idx = idx, .w = w, .out = out, .nidx = nidx, .cols = cols, .out_rows = out_rows};
  int par = nidx * cols >= PAR_MIN_LIGHT && sy_threads() > 1;
  if (!par) {
    sy_ew_impl->scatter_add(src, idx, w, nidx, cols, 0, cols, out);
    return;
  }
  /* Rows up to 1023 floats (dModel-sized, the MoE combine) split by output row: each thread then
   * writes (and, for a fresh output, page-faults) only its own rows; split by columns, every thread
   * touched every row. At 4096 sources x 256 columns: 0.55 vs 0.68 ms into a reused output, 2.75 vs
   * 3.73 ms into a fresh one. Wider rows keep the column split, which stays balanced however the
   * sources are spread over the rows. */
  if (cols >= 1024) {
    c.per_item = 64; /* fixed column blocks */
    sy_parallel_for(cdiv(cols, c.per_item), scatter_cols_item, &c);
  } else {
    int64_t *start = (int64_t *)malloc(sizeof(int64_t) * ((size_t)out_rows + 1)); /* no calloc in the wasm runtime */
    int32_t *order = (int32_t *)malloc(sizeof(int32_t) * (size_t)nidx);
    if (!start || !order) abort();
    memset(start, 0, sizeof(int64_t) * ((size_t)out_rows + 1));
    for (int64_t i = 0; i < nidx; i++) start[idx[i] + 1]++;
    for (int64_t r = 0; r < out_rows; r++) start[r + 1] += start[r];
    int64_t *fill = (int64_t *)malloc(sizeof(int64_t) * (size_t)(out_rows > 0 ? out_rows : 1));
    if (!fill) abort();
    memcpy(fill, start, sizeof(int64_t) * (size_t)out_rows);
    for (int64_t i = 0; i < nidx; i++) order[fill[idx[i]]++] = (int32_t)i;
    free(fill);
    c.start = start;
    c.order = order;
    int64_t parts = 4 * (int64_t)sy_threads();
    c.per_item = max64(1, cdiv(out_rows, parts));
    sy_parallel_for(cdiv(out_rows, c.per_item), scatter_rows_item, &c);
    free(start);
    free(order);
  }
}

/* ---------------------------------------------------------------------------------------- */
/* permute                                                                                   */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
  const float *x;
  float *out;
  int nd;
  int64_t os[SY_MAX_DIMS];  /* coalesced output shape */
  int64_t ist[SY_MAX_DIMS]; /* input stride of each output dim */
  int64_t ost[SY_MAX_DIMS]; /* output stride of each output dim */
  int p;                    /* output dim with input stride 1 (transpose mode), or -1 */
  int64_t n, chunk;
  /* transpose mode: outer combos x tile rows */
  int64_t tiles_p, tile;
} perm_ctx;

/* Generic/copy mode: flat output range. */
static void perm_flat_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const perm_ctx *c = (const perm_ctx *)vc;
  int64_t lo = item * c->chunk, hi = min64(c->n, lo + c->chunk);
  int last = c->nd - 1;
  int64_t idx[SY_MAX_DIMS], rem = lo, xo = 0;
  for (int d = last; d >= 0; d--) {
    idx[d] = rem % c->os[d];
    rem /= c->os[d];
    xo += idx[d] * c->ist[d];
  }
  int64_t pos = lo, sl = c->ist[last];
  while (pos < hi) {
    int64_t run = min64(c->os[last] - idx[last], hi - pos);
    if (sl == 1) memcpy(c->out + pos, c->x + xo, sizeof(float) * (size_t)run);
    else
      for (int64_t j = 0; j < run; j++) c->out[pos + j] = c->x[xo + j * sl];
    pos += run;
    idx[last] += run;
    xo += run * sl;
    for (int d = last; d > 0 && idx[d] == c->os[d]; d--) {
      xo -= idx[d] * c->ist[d];
      idx[d] = 0;
      idx[d - 1]++;
      xo += c->ist[d - 1];
    }
  }
}

/* Transpose mode: for each combination of the dims other than p and last, a 2-D transpose
 * out[i*ost[p] + j] = x[i + j*ist[last]] (i along p, j along last), tiled. */
static void perm_tr_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const perm_ctx *c = (const perm_ctx *)vc;
  int last = c->nd - 1, p = c->p;
  int64_t combo = item / c->tiles_p, tp = item % c->tiles_p;
  int64_t xo = 0, oo = 0, rem = combo;
  for (int d = c->nd - 1; d >= 0; d--) {
    if (d == p || d == last) continue;
    int64_t id = rem % c->os[d];
    rem /= c->os[d];
    xo += id * c->ist[d];
    oo += id * c->ost[d];
  }
  int64_t T = c->tile;
  int64_t i0 = tp * T, i1 = min64(c->os[p], i0 + T);
  int64_t sj = c->ist[last], so = c->ost[p];
  const float *xb = c->x + xo;
  float *ob = c->out + oo;
  for (int64_t j0 = 0; j0 < c->os[last]; j0 += T) {
    int64_t j1 = min64(c->os[last], j0 + T);
    for (int64_t i = i0; i < i1; i++)
      for (int64_t j = j0; j < j1; j++) ob[i * so + j] = xb[i + j * sj];
  }
}

void sy_op_permute(const float *x, const int64_t *shape, const int *perm, int nd, float *out) {
  perm_ctx c;
  c.x = x;
  c.out = out;
  int64_t instr[SY_MAX_DIMS];
  int64_t s = 1, n = 1;
  for (int d = nd - 1; d >= 0; d--) {
    instr[d] = s;
    s *= shape[d];
  }
  n = s;
  if (n == 0) return;
  /* output dims, dropping size-1, merging runs contiguous in the input */
  int k = 0;
  for (int d = 0; d < nd; d++) {
    int64_t sz = shape[perm[d]], st = instr[perm[d]];
    if (sz == 1) continue;
    if (k > 0 && c.ist[k - 1] == st * sz) {
      c.os[k - 1] *= sz;
      c.ist[k - 1] = st;
    } else {
      c.os[k] = sz;
      c.ist[k] = st;
      k++;
    }
  }
  if (k == 0) {
    c.os[0] = 1;
    c.ist[0] = 1;
    k = 1;
  }
  c.nd = k;
  int64_t o = 1;
  for (int d = k - 1; d >= 0; d--) {
    c.ost[d] = o;
    o *= c.os[d];
  }
  c.n = n;
  c.p = -1;
  if (c.ist[k - 1] != 1) {
    for (int d = 0; d < k - 1; d++)
      if (c.ist[d] == 1) c.p = d;
  }
  if (c.p < 0) {
    c.chunk = CHUNK_LIGHT;
    run_chunks(n, c.chunk, PAR_MIN_LIGHT, perm_flat_item, &c);
    return;
  }
  c.tile = 32;
  c.tiles_p = cdiv(c.os[c.p], c.tile);
  int64_t combos = n / (c.os[c.p] * c.os[k - 1]);
  int64_t items = combos * c.tiles_p;
  if (n < PAR_MIN_LIGHT || items <= 1) {
    for (int64_t i = 0; i < items; i++) perm_tr_item(&c, i, 0);
    return;
  }
  sy_parallel_for(items, perm_tr_item, &c);
}

/* ---------------------------------------------------------------------------------------- */
/* optimizer kernels                                                                         */
/* ---------------------------------------------------------------------------------------- */

#define CHUNK_ADAMW 16384 /* ~28 bytes of traffic plus a double sqrt and divide per element */
#define PAR_MIN_ADAMW 32768

typedef struct {
  const float *x;
  double *partial;
  int64_t n;
} sumsq_ctx;

static void sumsq_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const sumsq_ctx *c = (const sumsq_ctx *)vc;
  int64_t lo = item * SY_SUMSQ_CHUNK, len = min64(SY_SUMSQ_CHUNK, c->n - lo);
  c->partial[item] = sy_ew_impl->sum_squares(c->x + lo, len);
}

double sy_op_sum_squares(const float *x, int64_t n) {
  if (n <= 0) return 0.0;
  int64_t items = cdiv(n, SY_SUMSQ_CHUNK);
  double stack[256];
  double *partial = items <= 256 ? stack : (double *)malloc(sizeof(double) * (size_t)items);
  sumsq_ctx c = {.x = x, .partial = partial, .n = n};
  if (!partial) {
    /* out of memory for the partials: same chunking and order, serially */
    double s = 0.0;
    for (int64_t i = 0; i < items; i++) {
      int64_t lo = i * SY_SUMSQ_CHUNK;
      s += sy_ew_impl->sum_squares(x + lo, min64(SY_SUMSQ_CHUNK, n - lo));
    }
    return s;
  }
  run_chunks(n, SY_SUMSQ_CHUNK, 2 * SY_SUMSQ_CHUNK, sumsq_item, &c);
  double s = 0.0;
  for (int64_t i = 0; i < items; i++) s += partial[i]; /* chunk order, whoever ran the chunk */
  if (partial != stack) free(partial);
  return s;
}

typedef struct {
  float *p, *m, *v, *vmax;
  const float *grad;
  const sy_adamw_hyper *h;
  int64_t n;
} adamw_ctx;

static void adamw_item(void *vc, int64_t item, int tid) {
  (void)tid;
  const adamw_ctx *c = (const adamw_ctx *)vc;
  int64_t lo = item * CHUNK_ADAMW, len = min64(CHUNK_ADAMW, c->n - lo);
  sy_ew_impl->adamw(c->p + lo, c->grad + lo, c->m + lo, c->v + lo, c->vmax ? c->vmax + lo : NULL, len, c->h);
}

void sy_op_adamw(float *p, const float *grad, float *m, float *v, float *vmax, int64_t n, const sy_adamw_hyper *h) {
  adamw_ctx c = {.p = p, .m = m, .v = v, .vmax = vmax, .grad = grad, .h = h, .n = n};
  run_chunks(n, CHUNK_ADAMW, PAR_MIN_ADAMW, adamw_item, &c);
}
