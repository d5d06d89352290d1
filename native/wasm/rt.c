/*
 * Minimal freestanding runtime for the wasm32 build of the kernels: a thread-safe size-class
 * allocator on top of memory.grow, memcpy/memset/memmove (bulk-memory instructions), qsort and
 * abort. Nothing here is numerical; the kernels themselves are the shared native C sources.
 *
 * Allocator: blocks are powers of two from 64 B, each preceded by a 64-byte header holding its
 * class, so every pointer handed out is 64-byte aligned (what sy_scratch and the GEMM packers
 * want). Freed blocks go on a per-class free list; memory is never returned (wasm cannot shrink).
 * One spin lock guards it: allocations happen a few times per kernel call at most.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HDR 64
#define NCLASS 32
#define PAGE 65536

extern unsigned char __heap_base;

static uintptr_t heap_top; /* next unused byte */
static void *free_list[NCLASS];
static volatile int lock_word;

static void lock(void) {
  while (__atomic_exchange_n(&lock_word, 1, __ATOMIC_ACQUIRE)) {
  }
}
static void unlock(void) { __atomic_store_n(&lock_word, 0, __ATOMIC_RELEASE); }

_Noreturn void abort(void) { __builtin_trap(); }

/* Reserve n bytes (multiple of 64) at the top of the heap, growing memory as needed. */
static void *carve(size_t n) {
  if (heap_top == 0) heap_top = ((uintptr_t)&__heap_base + 63) & ~(uintptr_t)63;
  uintptr_t p = heap_top;
  uintptr_t end = p + n;
  if (end < p) return NULL;
  size_t have = __builtin_wasm_memory_size(0) * (size_t)PAGE;
  if (end > have) {
    size_t need = (end - have + PAGE - 1) / PAGE;
    if (__builtin_wasm_memory_grow(0, need) == (size_t)-1) return NULL;
  }
  heap_top = end;
  return (void *)p;
}

void *malloc(size_t n) {
  int c = 0;
  size_t sz = 64;
  while (sz < n) {
    sz <<= 1;
    if (++c >= NCLASS - 1) return NULL;
  }
  lock();
  void *blk = free_list[c];
  if (blk) free_list[c] = *(void **)blk;
  else blk = carve(sz + HDR);
  unlock();
  if (!blk) return NULL;
  *(int *)blk = c;
  return (unsigned char *)blk + HDR;
}

void *aligned_alloc(size_t align, size_t n) { return align <= 64 ? malloc(n) : NULL; }

void free(void *p) {
  if (!p) return;
  void *blk = (unsigned char *)p - HDR;
  int c = *(int *)blk;
  lock();
  *(void **)blk = free_list[c];
  free_list[c] = blk;
  unlock();
}

/* With -mbulk-memory these builtins lower to memory.copy / memory.fill (no recursion). */
void *memcpy(void *restrict d, const void *restrict s, size_t n) {
  __builtin_memcpy(d, s, n);
  return d;
}
void *memmove(void *d, const void *s, size_t n) {
  __builtin_memmove(d, s, n);
  return d;
}
void *memset(void *d, int c, size_t n) {
  __builtin_memset(d, c, n);
  return d;
}

/* Insertion sort: gemm.c sorts at most a few hundred task ranks per call. Stable. */
void qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *)) {
  unsigned char *b = (unsigned char *)base;
  unsigned char tmp[64];
  if (size > sizeof tmp) __builtin_trap();
  for (size_t i = 1; i < n; i++) {
    memcpy(tmp, b + i * size, size);
    size_t j = i;
    while (j > 0 && cmp(b + (j - 1) * size, tmp) > 0) {
      memcpy(b + j * size, b + (j - 1) * size, size);
      j--;
    }
    memcpy(b + j * size, tmp, size);
  }
}
