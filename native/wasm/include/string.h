/* Freestanding wasm32 shim: memcpy/memset/memmove (bulk-memory instructions, see ../rt.c). */
#ifndef SY_WASM_STRING_H
#define SY_WASM_STRING_H
#include <stddef.h>
void *memcpy(void *restrict d, const void *restrict s, size_t n);
void *memmove(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
#endif
