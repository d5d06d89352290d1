/*
 * Work units of a grouped call (gemm.c's task list, gemm_gated.c's expert blocks): the order in
 * which threads claim them, and the tail split both schedulers share.
 *
 * Units are claimed largest first. A call ends when its last unit ends, so the T smallest units
 * (the last claimed) are cut in two row halves at a panel boundary first: the thread that finishes
 * early then waits for half a small unit, not a whole one. Each half packs its own B blocks, a few
 * percent of its work. (Threads' summed waiting at the ends of an 8-expert layer training step's
 * parallel calls: 5.7-10 ms before this split, 2.8-4.9 ms after; docs/benchmarks.md, session 7.)
 * Which thread runs which rows never changes the arithmetic, so results do not depend on it.
 */
#include "sy.h"

#include <stdlib.h>

static int cmp_unit(const void *x, const void *y) {
  const sy_work_unit *a = (const sy_work_unit *)x, *b = (const sy_work_unit *)y;
  if (a->flops > b->flops) return -1;
  if (a->flops < b->flops) return 1;
  if (a->idx != b->idx) return a->idx - b->idx;
  return a->lo - b->lo;
}

int sy_schedule_units(sy_work_unit *units, int n, int threads, int mr, sy_unit_rows_fn rows, const void *ctx) {
  qsort(units, (size_t)n, sizeof(sy_work_unit), cmp_unit);
  if (threads <= 1 || n <= threads) return n;
  int added = 0;
  for (int u = n - threads; u < n; u++) {
    sy_work_unit *x = &units[u];
    int lo, hi;
    if (!rows(ctx, x, &lo, &hi)) continue;
    int panels = (hi - lo + mr - 1) / mr;
    if (panels < 2) continue;
    int mid = lo + (panels / 2) * mr; /* < hi: panels >= 2 */
    double whole = x->flops;
    units[n + added] = (sy_work_unit){whole * (hi - mid) / (hi - lo), x->idx, x->len, mid, hi};
    x->flops = whole * (mid - lo) / (hi - lo);
    x->lo = lo;
    x->hi = mid;
    added++;
  }
  if (added) qsort(units, (size_t)(n + added), sizeof(sy_work_unit), cmp_unit);
  return n + added;
}
