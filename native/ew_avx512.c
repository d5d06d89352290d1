/* compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mavx2 */
/* Element-wise / row-wise kernels, avx512 build of ew_impl.h. */
#define SY_EW_TABLE sy_ew_isa_avx512
#define SY_EW_NAME "avx512"
#include "ew_impl.h"
