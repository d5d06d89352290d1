/*
 * Item claiming for a parallel-for (included by exactly one pool file per build: pool.c natively,
 * wasm/pool_wasm.c in the browser build). Threads take items from a shared counter (or a private
 * one when a job runs inline); an item may also claim the item its thread runs next, before it
 * ends (sy_parallel_claim_ahead), so that it can fetch that item's data while it computes.
 *
 * The includer defines SY_CLAIM_TLS (its thread-local storage class) before including this file.
 */
#ifndef SWITCHYARD_CLAIM_H
#define SWITCHYARD_CLAIM_H

#include "sy.h"

/* A thread's claiming in the job it runs: `shared` is the job's counter (NULL: inline, `local`
 * counts instead) for `threads` threads, `ahead` the item taken early (-1: none). A thread-local
 * pointer to it, saved and restored around a job, so that an inline job nested inside an item
 * keeps its own. */
typedef struct {
  int64_t *shared;
  int64_t local, n, ahead;
  int threads;
} sy_claim_state;
static SY_CLAIM_TLS sy_claim_state *tl_claim;

static int64_t sy_claim_take(sy_claim_state *c) {
  return c->shared ? __atomic_fetch_add(c->shared, 1, __ATOMIC_RELAXED) : c->local++;
}

/* Items are not claimed early in a job's last `threads - 1`: a thread holding one of those while
 * it finishes its current item could leave another thread idle at the end of the job. */
int64_t sy_parallel_claim_ahead(void) {
  sy_claim_state *c = tl_claim;
  if (!c) return -1;
  if (c->ahead < 0) {
    int64_t peek = c->shared ? __atomic_load_n(c->shared, __ATOMIC_RELAXED) : c->local;
    if (peek > c->n - c->threads) return -1;
    c->ahead = sy_claim_take(c);
  }
  return c->ahead < c->n ? c->ahead : -1;
}

/* Runs items of [0, c->n) on this thread until none is left. */
static void sy_claim_run(sy_claim_state *c, sy_task_fn fn, void *ctx, int tid) {
  sy_claim_state *outer = tl_claim;
  tl_claim = c;
  for (;;) {
    int64_t it = c->ahead >= 0 ? c->ahead : sy_claim_take(c);
    c->ahead = -1;
    if (it >= c->n) break;
    fn(ctx, it, tid);
  }
  tl_claim = outer;
}

#endif
