/* Freestanding wasm32 shim: the few <stdlib.h> functions the kernels use (see ../rt.c). */
#ifndef SY_WASM_STDLIB_H
#define SY_WASM_STDLIB_H
#include <stddef.h>
void *malloc(size_t n);
void *aligned_alloc(size_t align, size_t n);
void free(void *p);
_Noreturn void abort(void);
void qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *));
#endif
