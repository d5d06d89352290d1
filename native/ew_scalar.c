/* compiled without ISA flags (baseline SSE2 on x86-64, NEON on arm64) */
/* Element-wise / row-wise kernels, scalar build of ew_impl.h. */
#define SY_EW_TABLE sy_ew_isa_scalar
#define SY_EW_NAME "scalar"
#include "ew_impl.h"
