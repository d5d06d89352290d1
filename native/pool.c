/*
 * Persistent thread pool, per-thread scratch buffers and runtime ISA selection.
 *
 * The calling thread is worker 0 and takes part in every job; pool threads 1..T-1 spin briefly
 * after a job (so back-to-back kernels dispatch in ~1 us) and then sleep on a futex (Linux) or a
 * condition variable. Items are claimed with an atomic counter; kernels make every item's result
 * independent of the thread that runs it, so dynamic claiming keeps results deterministic.
 */
#define _GNU_SOURCE
#include "sy.h"
#define SY_CLAIM_TLS _Thread_local
#include "claim.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#define SY_USE_FUTEX 1
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

#define SY_MAX_THREADS 256
/* Spin iterations (each a pause, ~40-140 cycles) before a worker goes to sleep: ~50-150 us. */
#define SY_SPIN 2000

/* ------------------------------------------------------------------------------------------ */
/* Scratch                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static _Thread_local float *tl_buf[4];
static _Thread_local size_t tl_cap[4];

float *sy_scratch(int slot, size_t floats) {
  if (floats > tl_cap[slot]) {
    size_t cap = floats + floats / 4 + 1024; /* grow geometrically-ish, keep some slack */
    size_t bytes = (cap * sizeof(float) + 63) & ~(size_t)63;
    float *p = (float *)aligned_alloc(64, bytes);
    if (!p) abort(); /* out of memory: nothing sensible to do inside a kernel */
    free(tl_buf[slot]);
    tl_buf[slot] = p;
    tl_cap[slot] = bytes / sizeof(float);
  }
  return tl_buf[slot];
}

static void scratch_free_all(void) {
  for (int i = 0; i < 4; i++) {
    free(tl_buf[i]);
    tl_buf[i] = NULL;
    tl_cap[i] = 0;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Pool                                                                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
  int nthreads; /* including the caller */
  pthread_t th[SY_MAX_THREADS];
  _Atomic uint32_t gen; /* job generation; futex word */
  _Atomic int quit;
  _Atomic int sleepers;
  sy_task_fn fn;
  void *ctx;
  int64_t nitems;
  int64_t next; /* the next unclaimed item (__atomic builtins, claim.h) */
  _Atomic int pending; /* workers still inside the current job */
  atomic_flag busy;
#if !SY_USE_FUTEX
  pthread_mutex_t mu;
  pthread_cond_t cv;
#endif
} pool_t;

static pool_t P = {.nthreads = 1, .busy = ATOMIC_FLAG_INIT
#if !SY_USE_FUTEX
                   , .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER
#endif
};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void wait_gen(uint32_t seen) {
#if SY_USE_FUTEX
  syscall(SYS_futex, (uint32_t *)&P.gen, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
#else
  pthread_mutex_lock(&P.mu);
  while (atomic_load(&P.gen) == seen && !atomic_load(&P.quit)) pthread_cond_wait(&P.cv, &P.mu);
  pthread_mutex_unlock(&P.mu);
#endif
}

static void wake_all(void) {
#if SY_USE_FUTEX
  syscall(SYS_futex, (uint32_t *)&P.gen, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
#else
  pthread_mutex_lock(&P.mu);
  pthread_cond_broadcast(&P.cv);
  pthread_mutex_unlock(&P.mu);
#endif
}

static void run_items(int tid) {
  sy_claim_state c = {&P.next, 0, P.nitems, -1, P.nthreads};
  sy_claim_run(&c, P.fn, P.ctx, tid);
}

static void *worker_main(void *arg) {
  int tid = (int)(intptr_t)arg;
  uint32_t seen = 0;
  for (;;) {
    uint32_t g;
    int spins = 0;
    while ((g = atomic_load_explicit(&P.gen, memory_order_acquire)) == seen) {
      if (atomic_load_explicit(&P.quit, memory_order_relaxed)) goto out;
      if (++spins < SY_SPIN) {
        cpu_relax();
        continue;
      }
      atomic_fetch_add(&P.sleepers, 1);
      if (atomic_load(&P.gen) == seen && !atomic_load(&P.quit)) wait_gen(seen);
      atomic_fetch_sub(&P.sleepers, 1);
      spins = 0;
    }
    seen = g;
    if (atomic_load(&P.quit)) goto out;
    run_items(tid);
    atomic_fetch_sub_explicit(&P.pending, 1, memory_order_release);
  }
out:
  scratch_free_all();
  return NULL;
}

static void stop_workers(void) {
  if (P.nthreads <= 1) return;
  atomic_store(&P.quit, 1);
  atomic_fetch_add(&P.gen, 1);
  wake_all();
  for (int i = 1; i < P.nthreads; i++) pthread_join(P.th[i], NULL);
  atomic_store(&P.quit, 0);
  P.nthreads = 1;
}

static int start_workers(int n) {
  if (n < 1) n = 1;
  if (n > SY_MAX_THREADS) n = SY_MAX_THREADS;
  P.nthreads = 1;
  for (int i = 1; i < n; i++) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    int rc = pthread_create(&P.th[i], &attr, worker_main, (void *)(intptr_t)i);
    pthread_attr_destroy(&attr);
    if (rc != 0) break;
    P.nthreads = i + 1;
  }
  return P.nthreads;
}

int sy_default_threads(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) n = 1;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int c = CPU_COUNT(&set);
    if (c >= 1 && c < n) n = c;
  }
#endif
  if (n > SY_MAX_THREADS) n = SY_MAX_THREADS;
  return (int)n;
}

static int initial_threads = 1; /* SWITCHYARD_THREADS, else the online CPU count */

static void pool_init(void) {
  int n = sy_default_threads();
  const char *env = getenv("SWITCHYARD_THREADS");
  if (env && *env) {
    long v = strtol(env, NULL, 10);
    if (v >= 1) n = v > SY_MAX_THREADS ? SY_MAX_THREADS : (int)v;
  }
  initial_threads = n;
  start_workers(n);
}

int sy_initial_threads(void) {
  pthread_once(&pool_once, pool_init);
  return initial_threads;
}

static void lock_pool(void) {
  while (atomic_flag_test_and_set_explicit(&P.busy, memory_order_acquire)) sched_yield();
}
static void unlock_pool(void) { atomic_flag_clear_explicit(&P.busy, memory_order_release); }

int sy_threads(void) {
  pthread_once(&pool_once, pool_init);
  return P.nthreads;
}

int sy_set_threads(int n) {
  pthread_once(&pool_once, pool_init);
  if (n <= 0) n = initial_threads;
  lock_pool();
  if (n != P.nthreads) {
    stop_workers();
    start_workers(n);
  }
  int r = P.nthreads;
  unlock_pool();
  return r;
}

void sy_parallel_for(int64_t nitems, sy_task_fn fn, void *ctx) {
  if (nitems <= 0) return;
  pthread_once(&pool_once, pool_init);
  if (nitems == 1 || P.nthreads <= 1 ||
      atomic_flag_test_and_set_explicit(&P.busy, memory_order_acquire)) {
    /* Inline: tiny job, single thread, or the pool is in use (nested call or another JS thread). */
    sy_claim_state c = {NULL, 0, nitems, -1, 1};
    sy_claim_run(&c, fn, ctx, 0);
    return;
  }
  P.fn = fn;
  P.ctx = ctx;
  P.nitems = nitems;
  __atomic_store_n(&P.next, 0, __ATOMIC_RELAXED);
  atomic_store_explicit(&P.pending, P.nthreads - 1, memory_order_relaxed);
  atomic_fetch_add(&P.gen, 1); /* seq_cst: publishes the job, ordered before the sleepers read */
  if (atomic_load(&P.sleepers) > 0) wake_all();
  run_items(0);
  int spins = 0;
  while (atomic_load_explicit(&P.pending, memory_order_acquire) > 0) {
    if (++spins < 1 << 14) cpu_relax();
    else sched_yield();
  }
  unlock_pool();
}

/* ------------------------------------------------------------------------------------------ */
/* ISA selection                                                                               */
/* ------------------------------------------------------------------------------------------ */

const sy_gemm_isa *sy_gemm_impl = &sy_gemm_isa_scalar;
const sy_ew_isa *sy_ew_impl = &sy_ew_isa_scalar;

static int cpu_has(const char *name) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (!strcmp(name, "avx512"))
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2");
  if (!strcmp(name, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return !strcmp(name, "scalar");
}

int sy_force_isa(const char *name) {
  if (!cpu_has(name)) return 0;
#if defined(__x86_64__)
  if (!strcmp(name, "avx512")) {
    sy_gemm_impl = &sy_gemm_isa_avx512;
    sy_ew_impl = &sy_ew_isa_avx512;
    return 1;
  }
  if (!strcmp(name, "avx2")) {
    sy_gemm_impl = &sy_gemm_isa_avx2;
    sy_ew_impl = &sy_ew_isa_avx2;
    return 1;
  }
#endif
  sy_gemm_impl = &sy_gemm_isa_scalar;
  sy_ew_impl = &sy_ew_isa_scalar;
  return 1;
}

void sy_select_isa(void) {
  const char *env = getenv("SWITCHYARD_ISA");
  if (env && *env && sy_force_isa(env)) return;
  if (sy_force_isa("avx512")) return;
  if (sy_force_isa("avx2")) return;
  sy_force_isa("scalar");
}

const char *sy_isa_name(void) { return sy_gemm_impl->name; }
