/* compiled with -mavx2 -mfma */
/* Element-wise / row-wise kernels, avx2 build of ew_impl.h. */
#define SY_EW_TABLE sy_ew_isa_avx2
#define SY_EW_NAME "avx2"
#include "ew_impl.h"
