/*
 * Grouped GEMM with a gated epilogue: the expert FFN's up-projection and the backward of its
 * down-projection, each fused with the gated activation while the freshly computed block is still
 * in cache (GLU experts, Shazeer 2020: hidden = act(X W1ᵀ) ⊙ X W3ᵀ).
 *
 *   SY_GATED_UP:        C1 = A·op(B1), C3 = A·op(B3)   (stored for the backward; C1 = C3 = NULL
 *                                                       keeps them in scratch instead: inference)
 *                       O1 = act(C1) ⊙ C3               (the hidden state)
 *   SY_GATED_DOWN_GRAD: G  = A·op(B1)                   (dHidden = dY·W2, never stored)
 *                       O1 = G ⊙ C3 ⊙ act'(C1),  O3 = G ⊙ act(C1)   (dH1, dH3 from H1 = C1, H3 = C3)
 *
 * Same packers, micro-kernel and depth blocking as gemm.c, so every C1/C3/G element is computed
 * by exactly the operation sequence of the plain GEMM and the epilogue is the element-wise gated
 * kernel: results do not depend on threads and match gemm + gatedAct(Grad) run separately. The
 * A block is packed once for both products of SY_GATED_UP (and, with one depth block, once for all of
 * a unit's column blocks).
 *
 * While a block computes, the micro-kernels prefetch the B source of the block packed next (the
 * unit's next block, or the first of the unit the thread claims next), so that packs read cache:
 * 64 experts' weights are 192 MB, cold at every call.
 *
 * Scheduling: a unit is a task's row range; tasks are claimed whole, largest first, except that a
 * task holding more than 1/(2T) of the work is cut into 2T panel-aligned row ranges (each packs
 * its own B blocks), and the T smallest units are halved (schedule.c, shared with gemm.c): the
 * last units claimed decide how long one thread waits for the others (the gated up-projection
 * call alone: 4% faster at 8 experts, paired A/B).
 */
#include "sy.h"

#include <stdlib.h>
#include <string.h>

#ifndef SY_GATED_NC
/* up: columns per block. Both packed B blocks, the C blocks and the next block's B sources being
 * prefetched fit in L2 at 256; at 512 the prefetched lines were evicted before the pack read
 * them (the up-projection call at 64 experts: 17.4-18.3 ms at 256, 19.1-20.5 at 512). */
#define SY_GATED_NC 256
#endif
#ifndef SY_GATED_GRAD_NC
/* down-grad: one packed B block only, so its blocks can be twice as wide; the epilogue then reads
 * and writes 4 KiB row segments of H1, H3, dH1, dH3 (whole pages at dFF = 1024), which the
 * hardware prefetchers stream better than 2 KiB ones (13% faster at 8 experts, 10% at 64). */
#define SY_GATED_GRAD_NC 1024
#endif

#ifndef SY_GATED_A_ONCE_BYTES
/* up, one depth block: a unit's packed rows up to this size are packed once for all its column
 * blocks (at dModel = 256, up to 754 rows), not once per column block: the up-projection call at
 * 8 experts 3% faster (paired), the A packs 4x fewer. With the two packed B blocks (512 KiB) they
 * stay in L2. */
#define SY_GATED_A_ONCE_BYTES (768 * 1024)
#endif

static inline int imin(int a, int b) { return a < b ? a : b; }

static inline const float *b_at(const float *b, int64_t ldb, int trans_b, int64_t l, int64_t j) {
  return trans_b ? b + j * ldb + l : b + l * ldb + j;
}

/* Units are sy_work_units: rows [lo, hi) of task idx (len 1), claimed largest first. */
typedef struct {
  const sy_gemm_isa *isa;
  const sy_gated_task *tasks;
  int mode, act;
  const sy_work_unit *units; /* largest first */
} gated_ctx;

/* Streams over the B sources (b1, and b3 for up) of the block a thread packs after the one of
 * task t ending at depth p_end in column block jc: t's next block, else the first block of the
 * unit the thread claims next from sched (NULL: none). Left empty when there is none. */
static void next_block_b(const sy_gemm_isa *isa, const sy_gated_task *t, int up, int NC, int p_end, int jc,
                         const gated_ctx *sched, sy_prefetch *pf1, sy_prefetch *pf3) {
  int np, nj;
  sy_block_after(t->k, NC, p_end, jc, &np, &nj);
  if (nj >= t->n) { /* np = 0: the next unit's first block */
    int64_t next = sched ? sy_parallel_claim_ahead() : -1;
    if (next < 0) return;
    t = &sched->tasks[sched->units[next].idx]; /* units have rows, columns and depth */
    nj = 0;
  }
  int nk = imin(sy_depth_block(isa, t->k), t->k - np), nn = imin(NC, t->n - nj);
  *pf1 = sy_prefetch_b(t->b1, t->ldb, t->trans_b, np, nk, nj, nn);
  if (up) *pf3 = sy_prefetch_b(t->b3, t->ldb, t->trans_b, np, nk, nj, nn);
}

/* Rows [i0, i1) of one task on the calling thread (sched: the call's units, or NULL). */
static void gated_rows(const sy_gemm_isa *isa, const sy_gated_task *t, int mode, int act, int i0, int i1,
                       const gated_ctx *sched) {
  const int KB = sy_depth_block(isa, t->k), KCM = SY_KC_MAX(isa), MR = isa->mr, NR = isa->nr, MC = isa->mc;
  const int up = mode == SY_GATED_UP;
  const int rows = i1 - i0;
  const int NC = ((up ? SY_GATED_NC : SY_GATED_GRAD_NC) / NR) * NR;
  /* up without C1/C3 (inference: nothing will read them): the products live in thread-local
   * scratch, one MR-row panel at a time when the depth fits one block, else the unit's rows (the
   * partial sums must survive the depth loop). That saves writing, and reading for ownership,
   * two [m, n] matrices. */
  const int keep = !up || t->c1 != NULL;
  const int whole = !keep && t->k > KB;
  /* up with one depth block: the unit's rows packed once, for every column block, when they fit
   * (else per row block and column block); the same panels either way */
  const int a_once = up && t->k <= KB && (size_t)(rows + MR) * (size_t)KB * sizeof(float) <= SY_GATED_A_ONCE_BYTES;
  float *a_all = NULL;
  if (a_once) {
    a_all = sy_scratch(0, (size_t)(rows + MR) * (size_t)KB + 64);
    isa->pack_a(0, t->a + (int64_t)i0 * t->lda, t->lda, rows, t->k, a_all);
  }
  for (int jc = 0; jc < t->n; jc += NC) {
    int ncb = imin(NC, t->n - jc);
    /* down-grad: G for the column block, accumulated over depth blocks: for all the unit's rows
     * when there are several, else one MC-row block reused, so it stays in L2 */
    float *g = up ? NULL : sy_scratch(3, (size_t)(t->k > KB ? rows : imin(MC, rows)) * (size_t)ncb + 64);
    size_t part = (size_t)(whole ? rows : MR) * (size_t)ncb;
    float *s1 = keep ? NULL : sy_scratch(3, 2 * part + 64), *s3 = keep ? NULL : s1 + part;
    for (int p0 = 0; p0 < t->k; p0 += KB) {
      int kcb = imin(KB, t->k - p0);
      int last = p0 + kcb >= t->k;
      float *bp1 = sy_scratch(1, (size_t)KCM * (size_t)(NC + NR) + 64);
      isa->pack_b(t->trans_b, b_at(t->b1, t->ldb, t->trans_b, p0, jc), t->ldb, kcb, ncb, bp1);
      float *bp3 = NULL;
      if (up) {
        bp3 = sy_scratch(2, (size_t)KCM * (size_t)(NC + NR) + 64);
        isa->pack_b(t->trans_b, b_at(t->b3, t->ldb, t->trans_b, p0, jc), t->ldb, kcb, ncb, bp3);
      }
      /* the B source of the block packed next, fetched while this one computes */
      sy_prefetch pf1 = {0}, pf3 = {0};
      next_block_b(isa, t, up, NC, p0 + kcb, jc, sched, &pf1, &pf3);
      for (int ib = i0; ib < i1; ib += MC) {
        int mcb = imin(MC, i1 - ib);
        float *ap;
        if (a_once) {
          ap = a_all + (int64_t)(ib - i0) * kcb;
        } else {
          ap = sy_scratch(0, (size_t)(MC + isa->mr) * (size_t)KCM + 64);
          isa->pack_a(0, t->a + (int64_t)ib * t->lda + p0, t->lda, mcb, kcb, ap);
        }
        if (up) {
          /* Panel by panel (MR rows): both products for the panel's rows, then their epilogue, so
           * the hidden state's stores interleave with the FMAs instead of following the block
           * (7-11% faster at 8 experts, 5% at 64, paired in-process A/B). */
          for (int ir = 0; ir < mcb; ir += MR) {
            int mr = imin(MR, mcb - ir);
            const float *api = ap + (int64_t)ir * kcb;
            /* this panel's C1/C3 rows: in the outputs, or in scratch */
            float *q1, *q3;
            int64_t ldq;
            if (keep) {
              q1 = t->c1 + (int64_t)(ib + ir) * t->ld + jc;
              q3 = t->c3 + (int64_t)(ib + ir) * t->ld + jc;
              ldq = t->ld;
            } else {
              int64_t row0 = whole ? (int64_t)(ib - i0 + ir) * ncb : 0;
              q1 = s1 + row0;
              q3 = s3 + row0;
              ldq = ncb;
            }
            for (int jr = 0; jr < ncb; jr += NR) {
              int nr = imin(NR, ncb - jr);
              isa->micro(kcb, api, bp1 + (int64_t)jr * kcb, q1 + jr, ldq, mr, nr, p0 > 0, &pf1);
              isa->micro(kcb, api, bp3 + (int64_t)jr * kcb, q3 + jr, ldq, mr, nr, p0 > 0, &pf3);
            }
            if (last) {
              for (int r = 0; r < mr; r++) {
                int64_t o = (int64_t)r * ldq;
                sy_ew_impl->gated(act, q1 + o, q3 + o, t->o1 + (int64_t)(ib + ir + r) * t->ld + jc, ncb);
              }
            }
          }
        } else {
          float *gb = t->k > KB ? g + (int64_t)(ib - i0) * ncb : g;
          sy_gemm_block(isa, ap, bp1, mcb, ncb, kcb, gb, ncb, p0 > 0, &pf1);
          if (last) {
            for (int r = 0; r < mcb; r++) {
              int64_t o = (int64_t)(ib + r) * t->ld + jc;
              sy_ew_impl->gated_grad(act, t->c1 + o, t->c3 + o, gb + (int64_t)r * ncb, t->o1 + o, t->o3 + o, ncb);
            }
          }
        }
      }
    }
  }
}

static void gated_unit(void *vctx, int64_t item, int tid) {
  (void)tid;
  const gated_ctx *c = (const gated_ctx *)vctx;
  const sy_work_unit *u = &c->units[item];
  gated_rows(c->isa, &c->tasks[u->idx], c->mode, c->act, u->lo, u->hi, c);
}

static int unit_rows(const void *ctx, const sy_work_unit *u, int *lo, int *hi) {
  (void)ctx;
  *lo = u->lo;
  *hi = u->hi;
  return 1;
}

void sy_gemm_gated_run(int mode, int act, const sy_gated_task *tasks, int ntasks) {
  const sy_gemm_isa *isa = sy_gemm_impl;
  const int T = sy_threads(), MR = isa->mr;
  double total = 0.0;
  for (int i = 0; i < ntasks; i++) {
    const sy_gated_task *t = &tasks[i];
    if (t->m > 0 && t->n > 0 && t->k > 0) total += 2.0 * t->m * t->n * t->k;
  }
  /* k = 0: the products are zero and the epilogue still defines the outputs: up writes C1 = C3 = 0
   * and O1 = act(0)·0; down-grad has G = 0, so dH1 = dH3 = 0. */
  for (int i = 0; i < ntasks; i++) {
    const sy_gated_task *t = &tasks[i];
    if (t->m <= 0 || t->n <= 0 || t->k > 0) continue;
    if (mode == SY_GATED_UP && !t->c1) { /* C1 = C3 = 0 not kept: O1 = act(0)·0 = 0 */
      for (int r = 0; r < t->m; r++) memset(t->o1 + (int64_t)r * t->ld, 0, sizeof(float) * (size_t)t->n);
      continue;
    }
    for (int r = 0; r < t->m; r++) {
      int64_t o = (int64_t)r * t->ld;
      float *z1 = mode == SY_GATED_UP ? t->c1 + o : t->o1 + o, *z3 = mode == SY_GATED_UP ? t->c3 + o : t->o3 + o;
      memset(z1, 0, sizeof(float) * (size_t)t->n);
      memset(z3, 0, sizeof(float) * (size_t)t->n);
      if (mode == SY_GATED_UP) sy_ew_impl->gated(act, z1, z3, t->o1 + o, t->n);
    }
  }
  if (total == 0.0) return;
  sy_work_unit *units = (sy_work_unit *)malloc(sizeof(sy_work_unit) * ((size_t)ntasks * (size_t)(2 * T) + (size_t)T));
  if (!units) abort();
  int nunits = 0;
  double big_cut = total / (2.0 * T);
  for (int i = 0; i < ntasks; i++) {
    const sy_gated_task *t = &tasks[i];
    if (t->m <= 0 || t->n <= 0 || t->k <= 0) continue;
    int panels = (t->m + MR - 1) / MR;
    int parts = 2.0 * t->m * t->n * t->k > big_cut ? imin(2 * T, panels) : 1;
    for (int p = 0; p < parts; p++) {
      int lo = (int)((int64_t)panels * p / parts) * MR, hi = imin(t->m, (int)((int64_t)panels * (p + 1) / parts) * MR);
      if (lo >= hi) continue;
      units[nunits++] = (sy_work_unit){2.0 * (hi - lo) * t->n * t->k, i, 1, lo, hi};
    }
  }
  nunits = sy_schedule_units(units, nunits, T, MR, unit_rows, NULL);
  gated_ctx c = {isa, tasks, mode, act, units};
  sy_parallel_for(nunits, gated_unit, &c); /* inline when the pool has one thread */
  free(units);
}
