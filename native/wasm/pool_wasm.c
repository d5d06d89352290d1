/*
 * wasm32 runtime for the shared kernels: ISA selection, scratch buffers and the parallel-for that
 * native/pool.c provides on Linux, rebuilt for the browser.
 *
 * Threads (the build with -matomics and a shared memory): there is no pthread_create in a browser
 * without emscripten, so JavaScript starts the workers (src/backend/wasm-worker.ts). Each worker
 * instantiates this same module on the same shared memory, gets its own stack and TLS block, and
 * calls sy_wasm_worker(tid), which never returns: it waits (memory.atomic.wait32, allowed in
 * workers) for a job generation bump, claims items from an atomic counter, and signals done. The
 * calling thread (tid 0) takes part in every job and then spins until the workers finish: it may be
 * the page's main thread, where blocking waits are not allowed.
 *
 * Without the atomics feature (the single-threaded build, used when the page is not cross-origin
 * isolated) sy_wasm_worker is absent and every parallel-for runs inline.
 */
#include "../sy.h"

#include <stdlib.h>

#define SY_WASM_MAX_THREADS 64
#define SY_SPIN 20000

/* GEMM: the SIMD128 micro-kernel (gemm_simd128.c); element-wise: ew_impl.h built by ew_scalar.c,
 * which clang auto-vectorises with -msimd128. */
extern const sy_gemm_isa sy_gemm_isa_simd128;
const sy_gemm_isa *sy_gemm_impl = &sy_gemm_isa_simd128;
const sy_ew_isa *sy_ew_impl = &sy_ew_isa_scalar;

void sy_select_isa(void) {
  sy_gemm_impl = &sy_gemm_isa_simd128;
  sy_ew_impl = &sy_ew_isa_scalar;
}
const char *sy_isa_name(void) { return "wasm-simd128"; }
int sy_force_isa(const char *name) {
  (void)name;
  return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Scratch: thread-local (each wasm instance has its own TLS block, see sy_wasm_worker)       */
/* ---------------------------------------------------------------------------------------- */

#if defined(__wasm_atomics__)
#define SY_TLS _Thread_local
#else
#define SY_TLS /* one thread: wasm-ld rejects TLS without the atomics feature */
#endif
#define SY_CLAIM_TLS SY_TLS
#include "../claim.h"

static SY_TLS float *tl_buf[4];
static SY_TLS size_t tl_cap[4];

float *sy_scratch(int slot, size_t floats) {
  if (floats > tl_cap[slot]) {
    size_t cap = floats + floats / 4 + 1024;
    float *p = (float *)aligned_alloc(64, cap * sizeof(float));
    if (!p) abort(); /* out of memory inside a kernel: trap (JS sees a RuntimeError) */
    free(tl_buf[slot]);
    tl_buf[slot] = p;
    tl_cap[slot] = cap;
  }
  return tl_buf[slot];
}

/* ---------------------------------------------------------------------------------------- */
/* Pool                                                                                      */
/* ---------------------------------------------------------------------------------------- */

static int configured = 1;       /* threads requested (caller included) */
static int ready = 0;            /* workers that have entered sy_wasm_worker */
static volatile uint32_t gen;    /* job generation (the wait/notify word) */
static int job_threads;          /* threads taking part in the current job */
static sy_task_fn job_fn;
static void *job_ctx;
static int64_t job_n;
static int64_t next_item;
static int pending;              /* workers still inside the current job */
static int busy;                 /* the pool is in use (nested/concurrent callers run inline) */
static int failed;               /* a worker trapped (e.g. out of memory): its items never finish */

static int active_threads(void) {
  int r = __atomic_load_n(&ready, __ATOMIC_ACQUIRE) + 1;
  return configured < r ? configured : r;
}

int sy_threads(void) { return active_threads(); }
int sy_default_threads(void) { return __atomic_load_n(&ready, __ATOMIC_ACQUIRE) + 1; }
int sy_initial_threads(void) { return sy_default_threads(); }

int sy_set_threads(int n) {
  if (n <= 0) n = SY_WASM_MAX_THREADS;
  configured = n > SY_WASM_MAX_THREADS ? SY_WASM_MAX_THREADS : n;
  return active_threads();
}

static void run_items(int tid) {
  sy_claim_state c = {&next_item, 0, job_n, -1, job_threads};
  sy_claim_run(&c, job_fn, job_ctx, tid);
}

void sy_parallel_for(int64_t nitems, sy_task_fn fn, void *ctx) {
  int T = active_threads();
  if (nitems <= 1 || T <= 1 || __atomic_exchange_n(&busy, 1, __ATOMIC_ACQUIRE)) {
    sy_claim_state c = {NULL, 0, nitems, -1, 1};
    sy_claim_run(&c, fn, ctx, 0);
    return;
  }
  job_fn = fn;
  job_ctx = ctx;
  job_n = nitems;
  job_threads = T;
  __atomic_store_n(&next_item, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&pending, T - 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&gen, 1, __ATOMIC_RELEASE);
#if defined(__wasm_atomics__)
  __builtin_wasm_memory_atomic_notify((int *)&gen, 0xffffffffu);
#endif
  run_items(0);
  while (__atomic_load_n(&pending, __ATOMIC_ACQUIRE) != 0) {
    /* a dead worker would make this spin forever: trap instead (JS sees a RuntimeError) */
    if (__atomic_load_n(&failed, __ATOMIC_ACQUIRE)) __builtin_trap();
  }
  __atomic_store_n(&busy, 0, __ATOMIC_RELEASE);
}

#if defined(__wasm_atomics__)
/* Called by wasm-worker.ts when sy_wasm_worker trapped: the pool is unusable from now on. */
__attribute__((export_name("sy_wasm_worker_failed"))) void sy_wasm_worker_failed(void) {
  __atomic_store_n(&failed, 1, __ATOMIC_RELEASE);
}

/* Worker thread body (never returns). The generation is read before registering as ready, so a
 * job posted after the caller counted this worker is always seen as a change. */
__attribute__((export_name("sy_wasm_worker"))) void sy_wasm_worker(int tid) {
  uint32_t seen = __atomic_load_n(&gen, __ATOMIC_ACQUIRE);
  __atomic_fetch_add(&ready, 1, __ATOMIC_RELEASE);
  for (;;) {
    uint32_t g;
    int spins = 0;
    while ((g = __atomic_load_n(&gen, __ATOMIC_ACQUIRE)) == seen) {
      if (++spins < SY_SPIN) continue;
      __builtin_wasm_memory_atomic_wait32((int *)&gen, (int)seen, -1);
      spins = 0;
    }
    seen = g;
    if (tid < job_threads) {
      run_items(tid);
      __atomic_fetch_sub(&pending, 1, __ATOMIC_RELEASE);
    }
  }
}
#endif
