/*
 * ISA-independent GEMM driver (BLIS-style loop nest around a per-ISA packer + micro-kernel).
 *
 * For a task C[m,n] (+)= op(A)[m,k] · op(B)[k,n] the depth is cut into blocks of sy_depth_block(k);
 * each C element is the sum, over depth blocks in increasing order, of a register accumulation in
 * increasing k. Nothing else (row/column partitioning, thread count, which thread runs a tile)
 * affects the arithmetic, so results are bit-identical across runs and thread counts.
 *
 * Scheduling of a call (a task list):
 *   - tiny calls (< SY_GEMM_PAR_FLOPS) run serially on the calling thread;
 *   - a task holding more than 1/(2T) of the work is run by all threads as 2T row-block x
 *     column-block units, each packing its own A rows and B columns (see task_parallel);
 *   - the remaining tasks (the MoE grouped case) are claimed whole by threads, largest first,
 *     each thread packing into its own thread-local buffers; the T smallest are cut into two row
 *     halves first, so that the last items claimed are short (schedule.c, shared with
 *     gemm_gated.c).
 * A chain (a task and the tasks flagged `chain` right after it) is scheduled as one item and runs
 * in list order, so its later tasks may accumulate into what the earlier ones wrote.
 * In the grouped case, each block's micro-kernels prefetch the B source of the block the thread
 * packs next (see region_serial).
 */
#include "sy.h"

#include <stdlib.h>
#include <string.h>

#ifndef SY_GEMM_PAR_FLOPS
#define SY_GEMM_PAR_FLOPS (1 << 21) /* below ~2 MFLOP a dispatch costs more than it saves */
#endif
#ifndef SY_GEMM_NC
#define SY_GEMM_NC 1536 /* columns per packed B block on the serial path */
#endif

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Orders a thread's streamed (non-temporal) stores before whatever it does next, such as telling
 * the pool it is done: other threads and later calls then see C. */
#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define STORE_FENCE() _mm_sfence()
#else
#define STORE_FENCE() ((void)0)
#endif

#ifndef SY_GEMM_UNITS_PER_THREAD
#define SY_GEMM_UNITS_PER_THREAD 2 /* blocks per thread for a big task (dynamic balance) */
#endif

/* Split `total` panels into `parts` nearly equal ranges; range r = [lo, hi). */
static inline void split_range(int total, int parts, int r, int *lo, int *hi) {
  int base = total / parts, rem = total % parts;
  *lo = r * base + imin(r, rem);
  *hi = *lo + base + (r < rem ? 1 : 0);
}

static inline const float *a_at(const sy_gemm_task *t, int64_t i, int64_t l) {
  return t->trans_a ? t->a + l * t->lda + i : t->a + i * t->lda + l;
}
static inline const float *b_at(const sy_gemm_task *t, int64_t l, int64_t j) {
  return t->trans_b ? t->b + j * t->ldb + l : t->b + l * t->ldb + j;
}

static void zero_c(const sy_gemm_task *t) {
  for (int i = 0; i < t->m; i++) memset(t->c + (int64_t)i * t->ldc, 0, sizeof(float) * (size_t)t->n);
}

/*
 * C rows [i0, i1) x cols [j0, j1) for depth block [p0, p0 + kcb), with op(B) packed at bp
 * (panel of column j0 first; j0 - jbase is a multiple of nr).
 */
void sy_gemm_block(const sy_gemm_isa *isa, const float *ap, const float *bp, int mcb, int ncb, int kcb, float *c,
                   int64_t ldc, int acc, sy_prefetch *pf) {
  const int MR = isa->mr, NR = isa->nr;
  for (int jr = 0; jr < ncb; jr += NR) {
    const float *bpj = bp + (int64_t)jr * kcb;
    int nr = imin(NR, ncb - jr);
    for (int ir = 0; ir < mcb; ir += MR) {
      isa->micro(kcb, ap + (int64_t)ir * kcb, bpj, c + (int64_t)ir * ldc + jr, ldc, imin(MR, mcb - ir), nr, acc,
               pf);
    }
  }
}

static void macro_block(const sy_gemm_isa *isa, const sy_gemm_task *t, int i0, int i1, int j0, int j1,
                        int p0, int kcb, const float *bp, int acc, sy_prefetch *pf) {
  const int MR = isa->mr, MC = isa->mc;
  float *ap = sy_scratch(0, (size_t)(MC + MR) * (size_t)SY_KC_MAX(isa) + 64);
  for (int ib = i0; ib < i1; ib += MC) {
    int mcb = imin(MC, i1 - ib);
    isa->pack_a(t->trans_a, a_at(t, ib, p0), t->lda, mcb, kcb, ap);
    sy_gemm_block(isa, ap, bp, mcb, j1 - j0, kcb, t->c + (int64_t)ib * t->ldc + j0, t->ldc, acc, pf);
  }
}

typedef struct group_ctx group_ctx;
static const sy_gemm_task *next_item_task(const group_ctx *g, const sy_work_unit *r, int i);

/* C rows [i0, i1) x cols [j0, j1) of a task (k > 0) on the calling thread, thread-local packing.
 * In a grouped call (g: the schedule, r: the running unit, i: the task's index in it), each
 * block's compute also fetches the B source of the block packed next, so that packing reads
 * cache instead of memory: a grouped call's weights are cold (64 experts' are 192 MB). */
static void region_serial(const sy_gemm_isa *isa, const sy_gemm_task *t, int i0, int i1, int j0, int j1,
                          const group_ctx *g, const sy_work_unit *r, int i) {
  const int KB = sy_depth_block(isa, t->k), NR = isa->nr;
  const int NC = (SY_GEMM_NC / NR) * NR;
  for (int jc = j0; jc < j1; jc += NC) {
    int ncb = imin(NC, j1 - jc);
    for (int p0 = 0; p0 < t->k; p0 += KB) {
      int kcb = imin(KB, t->k - p0);
      float *bp = sy_scratch(1, (size_t)SY_KC_MAX(isa) * (size_t)(NC + NR) + 64);
      isa->pack_b(t->trans_b, b_at(t, p0, jc), t->ldb, kcb, ncb, bp);
      sy_prefetch pf = {0};
      if (g) {
        const sy_gemm_task *nt = t;
        int np, nj, nj1 = j1;
        sy_block_after(t->k, NC, p0 + kcb, jc, &np, &nj);
        if (nj >= j1) { /* np = 0: the next task's first block */
          nt = next_item_task(g, r, i);
          nj = 0;
          nj1 = nt ? nt->n : 0;
        }
        if (nt)
          pf = sy_prefetch_b(nt->b, nt->ldb, nt->trans_b, np, imin(sy_depth_block(isa, nt->k), nt->k - np), nj,
                             imin(NC, nj1 - nj));
      }
      /* streamed stores only when C is written once: no accumulation, one depth block */
      int acc = t->accumulate || p0 > 0 ? 1 : (t->stream && kcb == t->k ? 2 : 0);
      macro_block(isa, t, i0, i1, jc, jc + ncb, p0, kcb, bp, acc, &pf);
    }
  }
}

/* Whole task on the calling thread with thread-local pack buffers. */
static void task_serial(const sy_gemm_isa *isa, const sy_gemm_task *t) {
  if (t->m <= 0 || t->n <= 0) return;
  if (t->k <= 0) {
    if (!t->accumulate) zero_c(t);
    return;
  }
  region_serial(isa, t, 0, t->m, 0, t->n, NULL, NULL, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* One task, all threads                                                                     */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
  const sy_gemm_isa *isa;
  const sy_gemm_task *t;
  int R, S, mp, np;
} priv_ctx;

static void priv_unit(void *vctx, int64_t item, int tid) {
  (void)tid;
  const priv_ctx *c = (const priv_ctx *)vctx;
  int r = (int)(item / c->S), s = (int)(item % c->S);
  int plo, phi, qlo, qhi;
  split_range(c->mp, c->R, r, &plo, &phi);
  split_range(c->np, c->S, s, &qlo, &qhi);
  int i0 = plo * c->isa->mr, i1 = imin(c->t->m, phi * c->isa->mr);
  int j0 = qlo * c->isa->nr, j1 = imin(c->t->n, qhi * c->isa->nr);
  if (i0 < i1 && j0 < j1) region_serial(c->isa, c->t, i0, i1, j0, j1, NULL, NULL, 0);
  STORE_FENCE();
}

/*
 * One big task on all threads: R x S = 2T blocks (panel-aligned, near-equal), claimed dynamically;
 * each block packs its own A rows and B columns into thread-local buffers. The split minimises the
 * redundant packing (S-1)·m·k·ca + (R-1)·k·n·cb (ca, cb: relative cost of a transposing vs a
 * copying pack), which stays a few percent of the work; no thread
 * waits on another's packing and no packed data crosses cores.
 */
static void task_parallel(const sy_gemm_isa *isa, const sy_gemm_task *t, int T) {
  int U = SY_GEMM_UNITS_PER_THREAD * T;
  priv_ctx c = {isa, t, 1, 1, (int)ceil_div(t->m, isa->mr), (int)ceil_div(t->n, isa->nr)};
  double best = -1;
  for (int R = 1; R <= U; R++) {
    if (U % R) continue;
    int S = U / R;
    if (R > c.mp || S > c.np) continue;
    /* packing cost per element: a transposing pack (row-major A, transposed B) ~2x a copy */
    double ca = t->trans_a ? 1.0 : 2.0, cb = t->trans_b ? 2.0 : 1.0;
    double cost = (double)(S - 1) * t->m * ca + (double)(R - 1) * t->n * cb;
    if (best < 0 || cost < best) {
      best = cost;
      c.R = R;
      c.S = S;
    }
  }
  if (best < 0) { /* fewer panels than units: one block per panel row/column */
    c.R = imin(c.mp, U);
    c.S = imax(1, imin(c.np, U / c.R));
  }
  sy_parallel_for((int64_t)c.R * c.S, priv_unit, &c);
}

/* ---------------------------------------------------------------------------------------- */
/* Task list                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* An item is an sy_work_unit: a task and the tasks chained after it (idx, len), over rows
 * [lo, hi) of each, or whole (hi < 0). A chain runs in list order on one thread. */

struct group_ctx {
  const sy_gemm_isa *isa;
  const sy_gemm_task *tasks;
  const sy_work_unit *order;
};

/* The task this thread runs after task i of unit r: the next task of r's chain, else the first
 * task of the unit it claims next; NULL when none is left or it has nothing to compute. */
static const sy_gemm_task *next_item_task(const group_ctx *g, const sy_work_unit *r, int i) {
  const sy_gemm_task *t;
  if (i + 1 < r->idx + r->len) {
    t = &g->tasks[i + 1];
  } else {
    int64_t next = sy_parallel_claim_ahead();
    if (next < 0) return NULL;
    t = &g->tasks[g->order[next].idx];
  }
  return t->m > 0 && t->n > 0 && t->k > 0 ? t : NULL;
}

static void group_item(void *vctx, int64_t item, int tid) {
  (void)tid;
  const group_ctx *g = (const group_ctx *)vctx;
  const sy_work_unit *r = &g->order[item];
  for (int i = r->idx; i < r->idx + r->len; i++) {
    const sy_gemm_task *t = &g->tasks[i];
    if (t->m <= 0 || t->n <= 0 || t->k <= 0) task_serial(g->isa, t);
    else region_serial(g->isa, t, r->hi < 0 ? 0 : r->lo, r->hi < 0 ? t->m : r->hi, 0, t->n, g, r, i);
  }
  STORE_FENCE();
}

/* An item's rows can be split when its tasks all have rows, columns and depth and share m. */
static int item_rows(const void *ctx, const sy_work_unit *r, int *lo, int *hi) {
  const sy_gemm_task *tasks = (const sy_gemm_task *)ctx, *t0 = &tasks[r->idx];
  for (int i = r->idx; i < r->idx + r->len; i++)
    if (tasks[i].m != t0->m || tasks[i].n <= 0 || tasks[i].k <= 0) return 0;
  *lo = 0;
  *hi = t0->m;
  return 1;
}

static double task_flops(const sy_gemm_task *t) {
  if (t->m <= 0 || t->n <= 0 || t->k <= 0) return 0.0;
  return 2.0 * (double)t->m * (double)t->n * (double)t->k;
}

/* Tasks [i, i + len) form one item: task i and the chained tasks right after it. */
static int item_len(const sy_gemm_task *tasks, int ntasks, int i) {
  int len = 1;
  while (i + len < ntasks && tasks[i + len].chain) len++;
  return len;
}

void sy_gemm_run(const sy_gemm_task *tasks, int ntasks) {
  const sy_gemm_isa *isa = sy_gemm_impl;
  double total = 0.0;
  for (int i = 0; i < ntasks; i++) total += task_flops(&tasks[i]);
  int T = sy_threads();
  if (T <= 1 || total < (double)SY_GEMM_PAR_FLOPS) {
    /* in list order: chains hold by construction; task_serial zeroes k = 0 tasks */
    for (int i = 0; i < ntasks; i++) task_serial(isa, &tasks[i]);
    STORE_FENCE();
    return;
  }
  sy_work_unit stack_order[256];
  size_t cap = (size_t)ntasks + (size_t)T; /* the tail split adds at most T items */
  sy_work_unit *order = cap <= 256 ? stack_order : (sy_work_unit *)malloc(sizeof(sy_work_unit) * cap);
  if (!order) abort();
  int nsmall = 0;
  double big_cut = total / (2.0 * T);
  for (int i = 0; i < ntasks;) {
    int len = item_len(tasks, ntasks, i);
    double f = 0.0;
    for (int j = i; j < i + len; j++) f += task_flops(&tasks[j]);
    if (f > big_cut) {
      /* a big item now, by all threads: each big task split across them, in chain order */
      for (int j = i; j < i + len; j++) {
        if (task_flops(&tasks[j]) >= (double)SY_GEMM_PAR_FLOPS) task_parallel(isa, &tasks[j], T);
        else task_serial(isa, &tasks[j]);
      }
    } else if (f == 0.0) {
      for (int j = i; j < i + len; j++) task_serial(isa, &tasks[j]); /* k = 0: zeros or nothing */
    } else {
      order[nsmall] = (sy_work_unit){f, i, len, 0, -1};
      nsmall++;
    }
    i += len;
  }
  if (nsmall > 0) {
    nsmall = sy_schedule_units(order, nsmall, T, isa->mr, item_rows, tasks);
    group_ctx g = {isa, tasks, order};
    sy_parallel_for(nsmall, group_item, &g);
  }
  STORE_FENCE(); /* the calling thread's own tasks */
  if (order != stack_order) free(order);
}
