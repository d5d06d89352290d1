/* Freestanding wasm32 shim for <math.h>. sqrt and fabs are single wasm instructions; log and pow
 * (float64, used once per row / by the rare pow op) are imported from JavaScript's Math.log /
 * Math.pow, which are also what the TypeScript reference backend uses. */
#ifndef SY_WASM_MATH_H
#define SY_WASM_MATH_H
#define INFINITY (__builtin_inff())
#define NAN (__builtin_nanf(""))
static inline double sqrt(double x) { return __builtin_sqrt(x); }
static inline float sqrtf(float x) { return __builtin_sqrtf(x); }
static inline float fabsf(float x) { return __builtin_fabsf(x); }
static inline double fabs(double x) { return __builtin_fabs(x); }
static inline double floor(double x) { return __builtin_floor(x); }
__attribute__((import_module("env"), import_name("log"))) double log(double x);
__attribute__((import_module("env"), import_name("pow"))) double pow(double x, double y);
#endif
