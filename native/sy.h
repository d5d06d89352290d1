/*
 * Switchyard native backend: shared declarations.
 *
 * Layout of the native sources:
 *   pool.c          persistent pthread pool, per-thread scratch buffers, CPU feature dispatch
 *   gemm.c          ISA-independent GEMM driver (task scheduling, cache blocking, parallel split)
 *   gemm_avx512.c   AVX-512 packers + 14x32 register micro-kernel   (compiled with -mavx512*)
 *   gemm_avx2.c     AVX2/FMA packers + 6x16 micro-kernel             (compiled with -mavx2 -mfma)
 *   gemm_scalar.c   portable packers + 4x16 micro-kernel             (no ISA flags; NEON on arm64 by
 *                                                                     auto-vectorisation)
 *   ew_impl.h       element-wise / row-wise kernels, written as branch-free C that GCC vectorises;
 *                   included by ew_avx512.c, ew_avx2.c and ew_scalar.c (one copy per ISA)
 *   ops.c           parallel drivers for the element-wise / row-wise kernels
 *   addon.c         N-API bindings and argument validation
 *
 * Determinism: every kernel computes each output element with a fixed sequence of operations that
 * does not depend on which thread runs it, so results are bit-identical run to run (and, for the
 * kernels here, even across thread counts) on a given machine and ISA path.
 */
#ifndef SWITCHYARD_SY_H
#define SWITCHYARD_SY_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SY_INLINE static inline __attribute__((always_inline))
#define SY_NOINLINE __attribute__((noinline))
#define SY_RESTRICT __restrict__
#else
#define SY_INLINE static inline
#define SY_NOINLINE
#define SY_RESTRICT
#endif

/* ------------------------------------------------------------------------------------------ */
/* GEMM                                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* One GEMM task, already validated: C[m,n] (+)= op(A)[m,k] · op(B)[k,n]. */
typedef struct sy_gemm_task {
  const float *a;
  const float *b;
  float *c;
  int64_t lda, ldb, ldc;
  int m, n, k;
  int trans_a, trans_b, accumulate;
  int chain;  /* runs after the previous task of the list (GEMM_CHAIN) */
  int stream; /* C is not read again soon: its stores may bypass the cache (GEMM_STREAM) */
} sy_gemm_task;

/* A gemm task as the Backend interface passes it: SY_GEMM_PARAMS int32 per task, in the order
 * aBuf, aOff, lda, bBuf, bOff, ldb, cBuf, cOff, ldc, m, n, k, flags (src/backend/interface.ts). */
#define SY_GEMM_PARAMS 13
enum { SY_GEMM_TRANS_A = 1, SY_GEMM_TRANS_B = 2, SY_GEMM_ACCUMULATE = 4, SY_GEMM_CHAIN = 8, SY_GEMM_STREAM = 16 };

/* Task t of a list from its already validated params p and the buffers' base pointers. The
 * Node addon and the wasm module both decode with this, so the flags mean the same in both. */
SY_INLINE void sy_gemm_task_decode(const int32_t *p, int64_t t, float *const *bufs, sy_gemm_task *out) {
  int32_t flags = p[12];
  out->a = bufs[p[0]] + p[1];
  out->lda = p[2];
  out->b = bufs[p[3]] + p[4];
  out->ldb = p[5];
  out->c = bufs[p[6]] + p[7];
  out->ldc = p[8];
  out->m = p[9];
  out->n = p[10];
  out->k = p[11];
  out->trans_a = (flags & SY_GEMM_TRANS_A) != 0;
  out->trans_b = (flags & SY_GEMM_TRANS_B) != 0;
  out->accumulate = (flags & SY_GEMM_ACCUMULATE) != 0;
  out->chain = t > 0 && (flags & SY_GEMM_CHAIN) != 0; /* the first task has nothing to follow */
  out->stream = (flags & SY_GEMM_STREAM) != 0;
}

/* Per-ISA GEMM building blocks. Packed layouts:
 *   A block [mc x kc] -> ceil(mc/mr) panels, panel p holds rows p*mr.. as Ap[p*mr*kc + l*mr + i]
 *                        (rows past mc are zero).
 *   B block [kc x nc] -> ceil(nc/nr) panels, panel q holds cols q*nr.. as Bp[q*nr*kc + l*nr + j]
 *                        (cols past nc are zero). */
struct sy_prefetch;
typedef struct sy_gemm_isa {
  const char *name;
  int mr, nr;   /* register tile */
  int kc;       /* depth block (per ISA; with sy_depth_block the summation order depends only on it and k) */
  int mc;       /* rows per packed A block (multiple of mr) */
  void (*pack_a)(int trans, const float *a, int64_t lda, int mc, int kc, float *ap);
  void (*pack_b)(int trans, const float *b, int64_t ldb, int kc, int nc, float *bp);
  /* C[mr_eff x nr_eff] (+)= Ap-panel · Bp-panel over kc: acc=1 adds, acc=0 overwrites, acc=2
   * overwrites with stores that may bypass the cache (the caller fences before C is shared).
   * pf (may be NULL): a stream of lines to prefetch meanwhile, advanced in place (ISAs whose
   * kernels do not prefetch leave it as it is). */
  void (*micro)(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc, int mr_eff,
                int nr_eff, int acc, struct sy_prefetch *pf);
} sy_gemm_isa;

/*
 * Cache lines to fetch while micro-kernels compute: `rows` row segments of `bytes` bytes each,
 * `stride` bytes apart; p is the next line of the segment [row, row + bytes) (rows == 0: done).
 * The grouped GEMMs point one at the B source of the block they pack next, so that packing reads
 * cache, not memory: their weights are cold (a 64-expert layer's are 192 MB) and a pack otherwise
 * waits on memory while no FMA runs.
 */
typedef struct sy_prefetch {
  const char *p, *row;
  int64_t stride, bytes;
  int rows;
} sy_prefetch;

/* The source of op(B)'s block [p0, p0 + kcb) x [j0, j0 + ncb), as pack_b reads it. */
static inline sy_prefetch sy_prefetch_b(const float *b, int64_t ldb, int trans_b, int64_t p0, int kcb, int64_t j0,
                                        int ncb) {
  sy_prefetch pf;
  pf.row = (const char *)(trans_b ? b + j0 * ldb + p0 : b + p0 * ldb + j0);
  pf.bytes = (int64_t)(trans_b ? kcb : ncb) * (int64_t)sizeof(float);
  pf.rows = trans_b ? ncb : kcb;
  pf.stride = ldb * (int64_t)sizeof(float);
  pf.p = (const char *)((uintptr_t)pf.row & ~(uintptr_t)63);
  return pf;
}

/* The block a task's loop packs after the one ending at depth p_end in column block jc (depth
 * blocks inside column blocks of nc): *np, *nj; *nj >= the task's columns means the task is done. */
static inline void sy_block_after(int k, int nc, int p_end, int jc, int *np, int *nj) {
  *np = p_end < k ? p_end : 0;
  *nj = p_end < k ? jc : jc + nc;
}

/* Fetch the stream's next line into L2 (prefetcht1 on x86: L2 holds a packed block and the next
 * block's source, L1 does not), then step. Inlined into micro-kernel loops, on a local copy. */
static inline __attribute__((always_inline)) void sy_prefetch_step(sy_prefetch *pf) {
  if (pf->rows <= 0) return;
  __builtin_prefetch(pf->p, 0, 2);
  pf->p += 64;
  if (pf->p >= pf->row + pf->bytes && --pf->rows > 0) {
    pf->row += pf->stride;
    pf->p = (const char *)((uintptr_t)pf->row & ~(uintptr_t)63);
  }
}

/* Depth block of a task of depth k: the whole depth up to 5/4 of the ISA's kc (a short second
 * block would cost a full extra pass over C: the MoE weight gradients have depth = rows routed to
 * the expert, often just past kc), else kc. It depends on k alone, so results stay independent of
 * the thread count and of how a task's rows and columns are split. */
#define SY_KC_MAX(isa) ((isa)->kc + (isa)->kc / 4)
static inline int sy_depth_block(const sy_gemm_isa *isa, int k) {
  return k > 0 && k <= SY_KC_MAX(isa) ? k : isa->kc;
}

extern const sy_gemm_isa sy_gemm_isa_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const sy_gemm_isa sy_gemm_isa_avx2;
extern const sy_gemm_isa sy_gemm_isa_avx512;
#endif

/* Run a list of validated tasks (parallel as appropriate). */
void sy_gemm_run(const sy_gemm_task *tasks, int ntasks);

/* C[mcb x ncb] (+)= packed A block · packed B block (depth kcb) through the micro-kernel, panel by
 * panel (acc as for `micro`): the inner loops of every GEMM driver. */
void sy_gemm_block(const sy_gemm_isa *isa, const float *ap, const float *bp, int mcb, int ncb, int kcb, float *c,
                   int64_t ldc, int acc, sy_prefetch *pf);

/* Grouped GEMM with a gated epilogue (gemm_gated.c), one task per expert block, A row-major:
 *   SY_GATED_UP:        c1 = A·op(b1), c3 = A·op(b3) (stored; both NULL: not kept), o1 = act(c1) ⊙ c3
 *   SY_GATED_DOWN_GRAD: G = A·op(b1) (not stored), o1 = G ⊙ c3 ⊙ act'(c1), o3 = G ⊙ act(c1)
 * c1, c3, o1, o3 are [m x n] with leading dimension ld; act is an sy_unary_op activation. */
enum sy_gated_mode { SY_GATED_UP = 0, SY_GATED_DOWN_GRAD = 1 };
typedef struct sy_gated_task {
  const float *a;
  const float *b1, *b3; /* b3: SY_GATED_UP only */
  float *c1, *c3;       /* outputs (up; NULL when not kept) or the saved H1, H3 (down-grad) */
  float *o1, *o3;       /* o3: SY_GATED_DOWN_GRAD only */
  int64_t lda, ldb, ld;
  int m, n, k, trans_b;
} sy_gated_task;
void sy_gemm_gated_run(int mode, int act, const sy_gated_task *tasks, int ntasks);

/* A unit of a grouped call's schedule (schedule.c): tasks [idx, idx + len) of the call's list
 * over their C rows [lo, hi), or over whole tasks when hi < 0; flops ranks it. */
typedef struct sy_work_unit {
  double flops;
  int idx, len;
  int lo, hi;
} sy_work_unit;
/* The row range [*lo, *hi) of unit u, or 0 when it must not be cut (ctx: the caller's). */
typedef int (*sy_unit_rows_fn)(const void *ctx, const sy_work_unit *u, int *lo, int *hi);
/* Sort units (room for n + threads) largest first, then halve the rows of the `threads` smallest
 * at an mr-row panel boundary where `rows` allows; returns the new count. */
int sy_schedule_units(sy_work_unit *units, int n, int threads, int mr, sy_unit_rows_fn rows, const void *ctx);

/* ------------------------------------------------------------------------------------------ */
/* Element-wise / row-wise kernels (one table per ISA, see ew_impl.h)                           */
/* ------------------------------------------------------------------------------------------ */

enum sy_unary_op {
  SY_NEG = 0, SY_ABS, SY_EXP, SY_LOG, SY_SQRT, SY_RSQRT, SY_TANH, SY_SIGMOID, SY_SOFTPLUS,
  SY_RELU, SY_GELU, SY_GELU_TANH, SY_SILU, SY_SQUARE, SY_SIGN, SY_UNARY_COUNT
};
enum sy_binary_op { SY_ADD = 0, SY_SUB, SY_MUL, SY_DIV, SY_MAX, SY_MIN, SY_POW, SY_BINARY_COUNT };
enum sy_reduce_op { SY_RSUM = 0, SY_RMAX, SY_RMIN, SY_REDUCE_COUNT };

/* AdamW scalars, precomputed in double by the caller (src/optim/adamw.ts):
 *   g = sign·grad;  p ← p·decay (skipped when decay == 1);  m ← β₁m + (1-β₁)g;  v ← β₂v + (1-β₂)g·g;
 *   (AMSGrad: vmax ← max(vmax, v), NaN wins);  p ← p − step_size·m / (√(vmax or v)/bc2_sqrt + eps). */
typedef struct sy_adamw_hyper {
  double beta1, beta2, step_size, bc2_sqrt, eps, decay, sign;
} sy_adamw_hyper;

typedef struct sy_ew_isa {
  const char *name;
  /* element-wise on [0, n) */
  void (*unary)(int op, const float *x, float *out, int64_t n);
  void (*unary_grad)(int op, const float *x, const float *y, const float *dy, float *dx, int64_t n);
  void (*gated)(int act, const float *a, const float *b, float *out, int64_t n);
  void (*gated_grad)(int act, const float *a, const float *b, const float *dy, float *da, float *db,
                     int64_t n);
  void (*affine)(const float *x, float scale, float shift, float *out, int64_t n);
  /* out[i] = a[i*sa] op b[i*sb] for i < n, sa/sb in {0,1} (contiguous or broadcast scalar) */
  void (*binary_1d)(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out,
                    int64_t n);
  /* rows [r0, r1) of a [rows, cols] problem */
  void (*softmax)(const float *x, int64_t r0, int64_t r1, int64_t cols, int log, float *out);
  void (*softmax_grad)(const float *y, const float *dy, int64_t r0, int64_t r1, int64_t cols, int log,
                       float *dx);
  void (*logsumexp)(const float *x, int64_t r0, int64_t r1, int64_t cols, float *out);
  void (*rms_norm)(const float *x, const float *w, int64_t r0, int64_t r1, int64_t cols, float eps,
                   float *out, float *rstd);
  void (*rms_norm_grad_dx)(const float *x, const float *w, const float *rstd, const float *dy,
                           int64_t r0, int64_t r1, int64_t cols, float *dx);
  void (*layer_norm)(const float *x, const float *w, const float *b, int64_t r0, int64_t r1,
                     int64_t cols, float eps, float *out, float *mean, float *rstd);
  void (*layer_norm_grad_dx)(const float *x, const float *w, const float *mean, const float *rstd,
                             const float *dy, int64_t r0, int64_t r1, int64_t cols, float *dx);
  /* Column sums over all rows for columns [c0, c1): dw[c] += Σ_r dy[r,c]·(x[r,c]-mean[r])·rstd[r]
   * (mean may be NULL: rmsNorm), db[c] += Σ_r dy[r,c]; either output may be NULL. */
  void (*norm_param_grad)(const float *x, const float *mean, const float *rstd, const float *dy,
                          int64_t rows, int64_t cols, int64_t c0, int64_t c1, float *dw, float *db);
  void (*row_dot)(const float *a, const float *b, int64_t r0, int64_t r1, int64_t cols, float *out);
  /* reduce over the middle axis for outer index o and inner range [i0, i1) */
  void (*reduce)(int op, const float *x, int64_t o, int64_t len, int64_t inner, int64_t i0, int64_t i1,
                 float *out);
  /* out[idx[i], c] += w[i]·src[i, c] for i in [0, nidx), c in [c0, c1) */
  void (*scatter_add)(const float *src, const int32_t *idx, const float *w, int64_t nidx, int64_t cols,
                      int64_t c0, int64_t c1, float *out);
  /* Σ x[i]² over [0, n) in double: LANES (16, ew_impl.h) lane accumulators (lane j takes i ≡ j mod
   * 16 of the full groups), lanes added in order, then the tail in order. x² is exact in double, so the
   * result is the same on every ISA path (an FMA of an exact product rounds like mul + add). */
  double (*sum_squares)(const float *x, int64_t n);
  /* One fused AdamW step on [0, n) (see sy_adamw_hyper); vmax may be NULL (no AMSGrad). Per element
   * the same double operations in the same order as ReferenceBackend.adamw, rounded to float at the
   * same points, with FMA contraction disabled: bit-identical to the reference on every ISA path. */
  void (*adamw)(float *p, const float *grad, float *m, float *v, float *vmax, int64_t n,
                const struct sy_adamw_hyper *h);
} sy_ew_isa;

extern const sy_ew_isa sy_ew_isa_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const sy_ew_isa sy_ew_isa_avx2;
extern const sy_ew_isa sy_ew_isa_avx512;
#endif

/* ------------------------------------------------------------------------------------------ */
/* Runtime: ISA selection, thread pool, scratch                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Selected once at load (CPU check; env SWITCHYARD_ISA=scalar|avx2|avx512 may lower it). */
extern const sy_gemm_isa *sy_gemm_impl;
extern const sy_ew_isa *sy_ew_impl;
void sy_select_isa(void);
const char *sy_isa_name(void);
/* Force an ISA ("scalar", "avx2", "avx512"); returns 0 if unsupported on this CPU. */
int sy_force_isa(const char *name);

/* Parallel-for: fn(ctx, item, tid) for item in [0, nitems), items claimed dynamically by the
 * calling thread (tid 0) and the pool workers (tid 1..threads-1). Runs inline when nitems <= 1,
 * when the pool has one thread, or when another thread is already using the pool. Every kernel
 * makes each item's result independent of which thread runs it. */
typedef void (*sy_task_fn)(void *ctx, int64_t item, int tid);
void sy_parallel_for(int64_t nitems, sy_task_fn fn, void *ctx);
/* From inside an item: claims the item this thread will run after the current one and returns
 * it (the same one on every call during the item), or -1 when none is left. Lets an item fetch
 * its successor's data while it computes. */
int64_t sy_parallel_claim_ahead(void);
int sy_threads(void);          /* configured thread count (>= 1) */
int sy_set_threads(int n);     /* n <= 0 restores the startup count; returns the new count */
int sy_default_threads(void);  /* online CPUs (capped by the affinity mask) */
int sy_initial_threads(void);  /* the startup count: SWITCHYARD_THREADS, else sy_default_threads() */

/* Thread-local, 64-byte aligned, grow-only scratch (slot 0..3). Never freed while in use. */
float *sy_scratch(int slot, size_t floats);

/* ------------------------------------------------------------------------------------------ */
/* Parallel drivers (ops.c); arguments already validated by the addon                          */
/* ------------------------------------------------------------------------------------------ */

void sy_op_unary(int op, const float *x, float *out, int64_t n);
void sy_op_unary_grad(int op, const float *x, const float *y, const float *dy, float *dx, int64_t n);
void sy_op_gated(int act, const float *a, const float *b, float *out, int64_t n);
void sy_op_gated_grad(int act, const float *a, const float *b, const float *dy, float *da, float *db, int64_t n);
void sy_op_affine(const float *x, float scale, float shift, float *out, int64_t n);
/* shape/strides of length nd (nd <= SY_MAX_DIMS) */
#define SY_MAX_DIMS 32
void sy_op_binary(int op, const float *a, const int64_t *as, const float *b, const int64_t *bs, float *out,
                  const int64_t *shape, int nd);
void sy_op_reduce(int op, const float *x, int64_t outer, int64_t len, int64_t inner, float *out);
void sy_op_softmax(const float *x, int64_t rows, int64_t cols, int log, float *out);
void sy_op_softmax_grad(const float *y, const float *dy, int64_t rows, int64_t cols, int log, float *dx);
void sy_op_logsumexp(const float *x, int64_t rows, int64_t cols, float *out);
void sy_op_rms_norm(const float *x, const float *w, int64_t rows, int64_t cols, float eps, float *out, float *rstd);
void sy_op_rms_norm_grad(const float *x, const float *w, const float *rstd, const float *dy, int64_t rows,
                         int64_t cols, float *dx, float *dw);
void sy_op_layer_norm(const float *x, const float *w, const float *b, int64_t rows, int64_t cols, float eps,
                      float *out, float *mean, float *rstd);
void sy_op_layer_norm_grad(const float *x, const float *w, const float *mean, const float *rstd, const float *dy,
                           int64_t rows, int64_t cols, float *dx, float *dw, float *db);
void sy_op_permute(const float *x, const int64_t *shape, const int *perm, int nd, float *out);
void sy_op_gather_rows(const float *src, const int32_t *idx, int64_t nidx, int64_t cols, float *out);
void sy_op_gather_rows_scaled(const float *g, const int32_t *idx, int64_t nidx, int64_t cols, const float *w, float *out,
                              const float *dot_with, float *dot);
void sy_op_scatter_add_rows(const float *src, const int32_t *idx, const float *w, int64_t nidx, int64_t cols,
                            float *out, int64_t out_rows);
void sy_op_row_dot(const float *a, const float *b, int64_t rows, int64_t cols, float *out);
/* Per row of x [rows, cols]: the k <= cols largest entries, descending, and their columns; ties
 * to the lower column, NaN above every number (torch.topk's order). */
void sy_op_topk_rows(const float *x, int64_t rows, int64_t cols, int64_t k, float *values, int32_t *indices);
/* Rotary embedding of rows of D floats ("rotate half"): row r at position start + (r / heads) % seq,
 * with cos/sin tables [positions, D/2]; inverse rotates by -angle. In double, rounded once per
 * output (bit-identical to the reference). out may alias x. */
void sy_op_rotary(const float *x, float *out, const float *cos_t, const float *sin_t, int64_t rows, int64_t seq,
                  int64_t heads, int64_t dim, int64_t start, int inverse);
/* Σ x² in double over fixed chunks of SY_SUMSQ_CHUNK elements, the per-chunk partial sums added in
 * chunk order: the result depends only on n (not on threads or, see sum_squares, the ISA). */
#define SY_SUMSQ_CHUNK 65536
double sy_op_sum_squares(const float *x, int64_t n);
void sy_op_adamw(float *p, const float *grad, float *m, float *v, float *vmax, int64_t n, const sy_adamw_hyper *h);

#endif
