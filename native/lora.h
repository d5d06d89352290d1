/* Fused decode-path kernel of a mixture of LoRA experts (src/lora): see native/lora.c. */
#ifndef SY_LORA_H
#define SY_LORA_H
#include <stdint.h>

/* Routing modes (src/backend/interface.ts LORA_MIX_*). */
enum { SY_LORA_TOPK_NORM = 0, SY_LORA_TOPK_SOFTMAX = 1, SY_LORA_DENSE = 2, SY_LORA_ALL = 3 };

void sy_op_lora_mixture(const float *x, const float *router, const float *A, const float *B, const float *scales,
                        int64_t rows, int64_t d, int64_t out, int64_t n, int64_t k, int mode, const int32_t *ranks,
                        int32_t *experts, float *gates, float *logits, float *y);
#endif
