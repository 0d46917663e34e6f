/* simd_avx512.c - placeholder while the AVX-512 variant is written. */
#include "kernels.h"

const struct engine_variant engine__variant_avx512 = { .name = "avx512" };
