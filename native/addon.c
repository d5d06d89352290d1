/*
 * N-API bindings for the Switchyard native backend (plain C, node_api.h).
 *
 * Every entry point validates its arguments before touching memory: a wrong buffer type throws a
 * TypeError and a buffer that is too short (or a gemm task that reaches outside its buffers) throws
 * a RangeError naming the argument, instead of crashing the process.
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "sy.h"
#include "lora.h"

#define MAX_ARGS 12

typedef struct {
  napi_env env;
  const char *fn;
  size_t argc;
  napi_value argv[MAX_ARGS];
  int failed;
} call_t;

static void throw_range(call_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void throw_type(call_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#include <stdarg.h>
static void throw_range(call_t *c, const char *fmt, ...) {
  if (c->failed) return;
  char msg[512];
  int off = snprintf(msg, sizeof msg, "%s: ", c->fn);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg + off, sizeof msg - (size_t)off, fmt, ap);
  va_end(ap);
  napi_throw_range_error(c->env, "ERR_SWITCHYARD_RANGE", msg);
  c->failed = 1;
}
static void throw_type(call_t *c, const char *fmt, ...) {
  if (c->failed) return;
  char msg[512];
  int off = snprintf(msg, sizeof msg, "%s: ", c->fn);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg + off, sizeof msg - (size_t)off, fmt, ap);
  va_end(ap);
  napi_throw_type_error(c->env, "ERR_SWITCHYARD_TYPE", msg);
  c->failed = 1;
}

static int begin(call_t *c, napi_env env, napi_callback_info info, const char *fn, size_t want) {
  c->env = env;
  c->fn = fn;
  c->failed = 0;
  c->argc = MAX_ARGS;
  if (napi_get_cb_info(env, info, &c->argc, c->argv, NULL, NULL) != napi_ok) {
    throw_type(c, "could not read arguments");
    return 0;
  }
  if (c->argc < want) {
    throw_type(c, "expected %zu arguments, got %zu", want, c->argc);
    return 0;
  }
  return 1;
}

static int is_nullish(call_t *c, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(c->env, v, &t) != napi_ok) return 0;
  return t == napi_null || t == napi_undefined;
}

/* Float32Array argument (nullable: null/undefined gives NULL, len 0). */
static int arg_f32(call_t *c, int i, const char *name, int nullable, float **data, int64_t *len) {
  *data = NULL;
  *len = 0;
  if (c->failed) return 0;
  napi_value v = c->argv[i];
  if (nullable && is_nullish(c, v)) return 1;
  bool is_ta = false;
  napi_is_typedarray(c->env, v, &is_ta);
  if (!is_ta) {
    throw_type(c, "%s must be a Float32Array%s", name, nullable ? " or null" : "");
    return 0;
  }
  napi_typedarray_type type;
  size_t length;
  void *ptr;
  napi_get_typedarray_info(c->env, v, &type, &length, &ptr, NULL, NULL);
  if (type != napi_float32_array) {
    throw_type(c, "%s must be a Float32Array", name);
    return 0;
  }
  *data = (float *)ptr;
  *len = (int64_t)length;
  return 1;
}

static int arg_i32(call_t *c, int i, const char *name, int32_t **data, int64_t *len) {
  *data = NULL;
  *len = 0;
  if (c->failed) return 0;
  napi_value v = c->argv[i];
  bool is_ta = false;
  napi_is_typedarray(c->env, v, &is_ta);
  napi_typedarray_type type = napi_float32_array;
  size_t length = 0;
  void *ptr = NULL;
  if (is_ta) napi_get_typedarray_info(c->env, v, &type, &length, &ptr, NULL, NULL);
  if (!is_ta || type != napi_int32_array) {
    throw_type(c, "%s must be an Int32Array", name);
    return 0;
  }
  *data = (int32_t *)ptr;
  *len = (int64_t)length;
  return 1;
}

/* Non-negative integer (< 2^53). */
static int arg_count(call_t *c, int i, const char *name, int64_t *out) {
  *out = 0;
  if (c->failed) return 0;
  double d;
  if (napi_get_value_double(c->env, c->argv[i], &d) != napi_ok) {
    throw_type(c, "%s must be a number", name);
    return 0;
  }
  if (!(d >= 0) || d != floor(d) || d > 9007199254740991.0) {
    throw_range(c, "%s must be a non-negative integer (got %g)", name, d);
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}

static int arg_num(call_t *c, int i, const char *name, double *out) {
  *out = 0;
  if (c->failed) return 0;
  if (napi_get_value_double(c->env, c->argv[i], out) != napi_ok) {
    throw_type(c, "%s must be a number", name);
    return 0;
  }
  return 1;
}

static int arg_bool(call_t *c, int i, const char *name, int *out) {
  *out = 0;
  if (c->failed) return 0;
  bool b;
  if (napi_get_value_bool(c->env, c->argv[i], &b) != napi_ok) {
    /* accept numbers too */
    double d;
    if (napi_get_value_double(c->env, c->argv[i], &d) != napi_ok) {
      throw_type(c, "%s must be a boolean", name);
      return 0;
    }
    *out = d != 0;
    return 1;
  }
  *out = b;
  return 1;
}

static int arg_op(call_t *c, int i, const char *name, int count, int *out) {
  *out = 0;
  if (c->failed) return 0;
  int32_t v;
  if (napi_get_value_int32(c->env, c->argv[i], &v) != napi_ok || v < 0 || v >= count) {
    throw_range(c, "%s: unknown op code", name);
    return 0;
  }
  *out = v;
  return 1;
}

/* The activations of the gated kernels (gatedAct, gatedActGrad, gemmGated). */
static void check_gated_act(call_t *c, int act) {
  if (!c->failed && act != SY_RELU && act != SY_GELU && act != SY_GELU_TANH && act != SY_SILU)
    throw_range(c, "act: unsupported activation");
}

/* len >= need, else RangeError naming the argument. */
static int need(call_t *c, const char *name, int64_t len, int64_t want) {
  if (c->failed) return 0;
  if (len < want) {
    throw_range(c, "%s has %lld elements, needs at least %lld", name, (long long)len, (long long)want);
    return 0;
  }
  return 1;
}

/* a*b with overflow check against 2^62 */
static int mul_ok(call_t *c, int64_t a, int64_t b, int64_t *out) {
  *out = 0;
  if (c->failed) return 0;
  if (a != 0 && b > ((int64_t)1 << 62) / a) {
    throw_range(c, "size %lld x %lld is too large", (long long)a, (long long)b);
    return 0;
  }
  *out = a * b;
  return 1;
}

static napi_value undef(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

/* ---------------------------------------------------------------------------------------- */
/* gemm                                                                                      */
/* ---------------------------------------------------------------------------------------- */

/* Resolve an array of typed arrays: ok[i] = 1 with its data and length for a Float32Array. */
static void buffer_table(napi_env env, napi_value arr, uint32_t nbuf, float **bufs, int64_t *lens, signed char *ok) {
  for (uint32_t i = 0; i < nbuf; i++) {
    napi_value v;
    napi_get_element(env, arr, i, &v);
    bool is_ta = false;
    napi_is_typedarray(env, v, &is_ta);
    ok[i] = 0;
    bufs[i] = NULL;
    lens[i] = 0;
    if (!is_ta) continue;
    napi_typedarray_type type;
    size_t length;
    void *ptr;
    napi_get_typedarray_info(env, v, &type, &length, &ptr, NULL, NULL);
    if (type == napi_float32_array) {
      ok[i] = 1;
      bufs[i] = (float *)ptr;
      lens[i] = (int64_t)length;
    }
  }
}

/*
 * The buffers argument of a task-list kernel, resolved by buffer_table. Up to 64 entries live on
 * the stack; more are allocated, and buffer_set_close frees them.
 */
typedef struct {
  uint32_t n;
  float **bufs;
  int64_t *lens;
  signed char *ok;
  float *bufs_stack[64];
  int64_t lens_stack[64];
  signed char ok_stack[64];
} buffer_set;

/* Returns 0 after throwing (out of memory); buffer_set_close is due either way. */
static int buffer_set_open(call_t *c, napi_value arr, uint32_t nbuf, buffer_set *s) {
  s->n = nbuf;
  s->bufs = s->bufs_stack;
  s->lens = s->lens_stack;
  s->ok = s->ok_stack;
  if (nbuf > 64) {
    s->bufs = (float **)malloc(sizeof(float *) * nbuf);
    s->lens = (int64_t *)malloc(sizeof(int64_t) * nbuf);
    s->ok = (signed char *)malloc(nbuf);
  }
  if (!s->bufs || !s->lens || !s->ok) {
    throw_range(c, "out of memory");
    return 0;
  }
  buffer_table(c->env, arr, nbuf, s->bufs, s->lens, s->ok);
  return 1;
}

static void buffer_set_close(buffer_set *s) {
  if (s->bufs != s->bufs_stack) free(s->bufs);
  if (s->lens != s->lens_stack) free(s->lens);
  if (s->ok != s->ok_stack) free(s->ok);
}

/*
 * The (buffers, params) pair of a task-list kernel: argv[bi] an array (its length in *nbuf),
 * argv[bi + 1] an Int32Array of `stride` ints per task (at most max_tasks tasks). Returns 0 after
 * throwing.
 */
static int task_list_args(call_t *c, int bi, int stride, int64_t max_tasks, uint32_t *nbuf, int32_t **params,
                          int64_t *ntasks) {
  bool is_arr = false;
  napi_is_array(c->env, c->argv[bi], &is_arr);
  if (!is_arr) {
    throw_type(c, "buffers must be an array of Float32Array");
    return 0;
  }
  napi_get_array_length(c->env, c->argv[bi], nbuf);
  int64_t plen;
  if (!arg_i32(c, bi + 1, "params", params, &plen)) return 0;
  if (plen % stride != 0) {
    throw_range(c, "params.length=%lld is not a multiple of %d", (long long)plen, stride);
    return 0;
  }
  *ntasks = plen / stride;
  if (*ntasks > max_tasks) {
    throw_range(c, "too many tasks (%lld)", (long long)*ntasks);
    return 0;
  }
  return 1;
}

static napi_value js_gemm(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "gemm", 2)) return NULL;
  uint32_t nbuf = 0;
  int32_t *params;
  int64_t ntasks;
  if (!task_list_args(&c, 0, SY_GEMM_PARAMS, 1 << 24, &nbuf, &params, &ntasks)) return NULL;
  if (ntasks == 0) return undef(env);

  buffer_set set;
  sy_gemm_task task_stack[64];
  sy_gemm_task *tasks = task_stack;
  if (ntasks > 64) tasks = (sy_gemm_task *)malloc(sizeof(sy_gemm_task) * (size_t)ntasks);
  if (!tasks) {
    throw_range(&c, "out of memory");
    return NULL;
  }
  if (!buffer_set_open(&c, c.argv[0], nbuf, &set)) goto done;
  float *const *bufs = set.bufs;
  const int64_t *lens = set.lens;
  const signed char *okf = set.ok;
  for (int64_t t = 0; t < ntasks; t++) {
    const int32_t *p = params + t * SY_GEMM_PARAMS;
    int32_t ab = p[0], ao = p[1], lda = p[2], bb = p[3], bo = p[4], ldb = p[5], cb = p[6], co = p[7], ldc = p[8];
    int32_t m = p[9], n = p[10], k = p[11], flags = p[12];
    const char *which[3] = {"aBuf", "bBuf", "cBuf"};
    int32_t bi[3] = {ab, bb, cb};
    for (int q = 0; q < 3; q++) {
      if (bi[q] < 0 || (uint32_t)bi[q] >= nbuf) {
        throw_range(&c, "task %lld: %s=%d names a missing buffer (%u buffers)", (long long)t, which[q], bi[q], nbuf);
        goto done;
      }
      if (!okf[bi[q]]) {
        throw_type(&c, "task %lld: buffers[%d] (%s) is not a Float32Array", (long long)t, bi[q], which[q]);
        goto done;
      }
    }
    if (m < 0 || n < 0 || k < 0) {
      throw_range(&c, "task %lld: negative size (m=%d, n=%d, k=%d)", (long long)t, m, n, k);
      goto done;
    }
    if (ao < 0 || bo < 0 || co < 0 || lda < 0 || ldb < 0 || ldc < 0) {
      throw_range(&c, "task %lld: negative offset or leading dimension", (long long)t);
      goto done;
    }
    int ta = (flags & SY_GEMM_TRANS_A) != 0, tb = (flags & SY_GEMM_TRANS_B) != 0;
    if (m > 0 && n > 0) {
      if (m > 1 && ldc < n) {
        throw_range(&c, "task %lld: ldc=%d < n=%d would make C rows overlap", (long long)t, ldc, n);
        goto done;
      }
      int64_t cend = (int64_t)co + (int64_t)(m - 1) * ldc + n;
      if (cend > lens[cb]) {
        throw_range(&c, "task %lld: C (buffers[%d]) needs %lld elements (cOff=%d, ldc=%d, m=%d, n=%d), has %lld",
                    (long long)t, cb, (long long)cend, co, ldc, m, n, (long long)lens[cb]);
        goto done;
      }
      if (k > 0) {
        int64_t aend = ta ? (int64_t)ao + (int64_t)(k - 1) * lda + m : (int64_t)ao + (int64_t)(m - 1) * lda + k;
        if (aend > lens[ab]) {
          throw_range(&c, "task %lld: A (buffers[%d]) needs %lld elements (aOff=%d, lda=%d, %s), has %lld",
                      (long long)t, ab, (long long)aend, ao, lda, ta ? "transposed" : "row-major",
                      (long long)lens[ab]);
          goto done;
        }
        int64_t bend = tb ? (int64_t)bo + (int64_t)(n - 1) * ldb + k : (int64_t)bo + (int64_t)(k - 1) * ldb + n;
        if (bend > lens[bb]) {
          throw_range(&c, "task %lld: B (buffers[%d]) needs %lld elements (bOff=%d, ldb=%d, %s), has %lld",
                      (long long)t, bb, (long long)bend, bo, ldb, tb ? "transposed" : "row-major",
                      (long long)lens[bb]);
          goto done;
        }
      }
    }
    sy_gemm_task_decode(p, t, bufs, &tasks[t]);
  }
  sy_gemm_run(tasks, (int)ntasks);
done:
  buffer_set_close(&set);
  if (tasks != task_stack) free(tasks);
  return c.failed ? NULL : undef(env);
}

/* ---------------------------------------------------------------------------------------- */
/* gemmGated (gemm_gated.c)                                                                  */
/* ---------------------------------------------------------------------------------------- */

#define GATED_PARAMS 21

/* Resolve buffers[bi] + off as a matrix of rows x cols (leading dim ld, or cols-contiguous). */
static int gated_matrix(call_t *c, int64_t t, const char *name, int32_t bi, int32_t off, int64_t rows, int64_t cols,
                        int64_t ld, const buffer_set *s, float **out) {
  if (bi < 0 || (uint32_t)bi >= s->n) {
    throw_range(c, "task %lld: %s=%d names a missing buffer (%u buffers)", (long long)t, name, bi, s->n);
    return 0;
  }
  if (!s->ok[bi]) {
    throw_type(c, "task %lld: buffers[%d] (%s) is not a Float32Array", (long long)t, bi, name);
    return 0;
  }
  if (off < 0 || ld < 0) {
    throw_range(c, "task %lld: %s has a negative offset or leading dimension", (long long)t, name);
    return 0;
  }
  if (rows > 0 && cols > 0) {
    int64_t end = (int64_t)off + (rows - 1) * ld + cols;
    if (end > s->lens[bi]) {
      throw_range(c, "task %lld: %s (buffers[%d]) needs %lld elements, has %lld", (long long)t, name, bi,
                  (long long)end, (long long)s->lens[bi]);
      return 0;
    }
  }
  *out = s->bufs[bi] + off;
  return 1;
}

static napi_value js_gemm_gated(napi_env env, napi_callback_info info) {
  call_t c;
  int mode, act;
  if (!begin(&c, env, info, "gemmGated", 4)) return NULL;
  arg_op(&c, 0, "mode", 2, &mode);
  arg_op(&c, 1, "act", SY_UNARY_COUNT, &act);
  check_gated_act(&c, act);
  if (c.failed) return NULL;
  uint32_t nbuf = 0;
  int32_t *params;
  int64_t ntasks;
  if (!task_list_args(&c, 2, GATED_PARAMS, 1 << 20, &nbuf, &params, &ntasks)) return NULL;
  if (ntasks == 0) return undef(env);
  if (nbuf > (1u << 20)) {
    throw_range(&c, "too many buffers (%u)", nbuf);
    return NULL;
  }
  buffer_set set;
  sy_gated_task *tasks = (sy_gated_task *)calloc((size_t)ntasks, sizeof(sy_gated_task));
  if (!tasks) {
    throw_range(&c, "out of memory");
    return NULL;
  }
  if (!buffer_set_open(&c, c.argv[2], nbuf, &set)) goto done;
  for (int64_t t = 0; t < ntasks; t++) {
    const int32_t *p = params + t * GATED_PARAMS;
    int32_t lda = p[2], ldb = p[7], ld = p[16], m = p[17], n = p[18], k = p[19], tb = p[20] != 0;
    sy_gated_task *T = &tasks[t];
    if (m < 0 || n < 0 || k < 0) {
      throw_range(&c, "task %lld: negative size (m=%d, n=%d, k=%d)", (long long)t, m, n, k);
      goto done;
    }
    if (m > 1 && ld < n) {
      throw_range(&c, "task %lld: ld=%d < n=%d would make rows overlap", (long long)t, ld, n);
      goto done;
    }
    float *a, *b1, *b3 = NULL, *c1, *c3, *o1, *o3 = NULL;
    if (!gated_matrix(&c, t, "aBuf", p[0], p[1], m, k, lda, &set, &a)) goto done;
    if (!gated_matrix(&c, t, "b1Buf", p[3], p[4], tb ? n : k, tb ? k : n, ldb, &set, &b1)) goto done;
    if (mode == SY_GATED_UP &&
        !gated_matrix(&c, t, "b3Buf", p[5], p[6], tb ? n : k, tb ? k : n, ldb, &set, &b3))
      goto done;
    if (mode == SY_GATED_UP && p[8] == -1 && p[10] == -1) {
      c1 = c3 = NULL; /* the products are not kept (inference) */
    } else {
      if (!gated_matrix(&c, t, "c1Buf", p[8], p[9], m, n, ld, &set, &c1)) goto done;
      if (!gated_matrix(&c, t, "c3Buf", p[10], p[11], m, n, ld, &set, &c3)) goto done;
    }
    if (!gated_matrix(&c, t, "o1Buf", p[12], p[13], m, n, ld, &set, &o1)) goto done;
    if (mode == SY_GATED_DOWN_GRAD &&
        !gated_matrix(&c, t, "o3Buf", p[14], p[15], m, n, ld, &set, &o3))
      goto done;
    T->a = a;
    T->b1 = b1;
    T->b3 = b3;
    T->c1 = c1;
    T->c3 = c3;
    T->o1 = o1;
    T->o3 = o3;
    T->lda = lda;
    T->ldb = ldb;
    T->ld = ld;
    T->m = m;
    T->n = n;
    T->k = k;
    T->trans_b = tb;
  }
  sy_gemm_gated_run(mode, act, tasks, (int)ntasks);
done:
  buffer_set_close(&set);
  free(tasks);
  return c.failed ? NULL : undef(env);
}

/* ---------------------------------------------------------------------------------------- */
/* element-wise                                                                              */
/* ---------------------------------------------------------------------------------------- */

static napi_value js_unary(napi_env env, napi_callback_info info) {
  call_t c;
  int op;
  float *x, *out;
  int64_t nx, no;
  if (!begin(&c, env, info, "unary", 3)) return NULL;
  arg_op(&c, 0, "op", SY_UNARY_COUNT, &op);
  arg_f32(&c, 1, "x", 0, &x, &nx);
  arg_f32(&c, 2, "out", 0, &out, &no);
  need(&c, "out", no, nx);
  if (c.failed) return NULL;
  sy_op_unary(op, x, out, nx);
  return undef(env);
}

static napi_value js_unary_grad(napi_env env, napi_callback_info info) {
  call_t c;
  int op;
  float *x, *y, *dy, *dx;
  int64_t nx, ny, ndy, ndx;
  if (!begin(&c, env, info, "unaryGrad", 5)) return NULL;
  arg_op(&c, 0, "op", SY_UNARY_COUNT, &op);
  arg_f32(&c, 1, "x", 0, &x, &nx);
  arg_f32(&c, 2, "y", 0, &y, &ny);
  arg_f32(&c, 3, "dy", 0, &dy, &ndy);
  arg_f32(&c, 4, "dx", 0, &dx, &ndx);
  need(&c, "y", ny, nx);
  need(&c, "dy", ndy, nx);
  need(&c, "dx", ndx, nx);
  if (c.failed) return NULL;
  sy_op_unary_grad(op, x, y, dy, dx, nx);
  return undef(env);
}

static napi_value js_gated(napi_env env, napi_callback_info info) {
  call_t c;
  int op;
  float *a, *b, *out;
  int64_t na, nb, no;
  if (!begin(&c, env, info, "gatedAct", 4)) return NULL;
  arg_op(&c, 0, "act", SY_UNARY_COUNT, &op);
  arg_f32(&c, 1, "a", 0, &a, &na);
  arg_f32(&c, 2, "b", 0, &b, &nb);
  arg_f32(&c, 3, "out", 0, &out, &no);
  need(&c, "b", nb, na);
  need(&c, "out", no, na);
  check_gated_act(&c, op);
  if (c.failed) return NULL;
  sy_op_gated(op, a, b, out, na);
  return undef(env);
}

static napi_value js_gated_grad(napi_env env, napi_callback_info info) {
  call_t c;
  int op;
  float *a, *b, *dy, *da, *db;
  int64_t na, nb, ndy, nda, ndb;
  if (!begin(&c, env, info, "gatedActGrad", 6)) return NULL;
  arg_op(&c, 0, "act", SY_UNARY_COUNT, &op);
  arg_f32(&c, 1, "a", 0, &a, &na);
  arg_f32(&c, 2, "b", 0, &b, &nb);
  arg_f32(&c, 3, "dy", 0, &dy, &ndy);
  arg_f32(&c, 4, "da", 0, &da, &nda);
  arg_f32(&c, 5, "db", 0, &db, &ndb);
  need(&c, "b", nb, na);
  need(&c, "dy", ndy, na);
  need(&c, "da", nda, na);
  need(&c, "db", ndb, na);
  check_gated_act(&c, op);
  if (c.failed) return NULL;
  sy_op_gated_grad(op, a, b, dy, da, db, na);
  return undef(env);
}

static napi_value js_affine(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *out;
  int64_t nx, no;
  double scale, shift;
  if (!begin(&c, env, info, "affine", 4)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_num(&c, 1, "scale", &scale);
  arg_num(&c, 2, "shift", &shift);
  arg_f32(&c, 3, "out", 0, &out, &no);
  need(&c, "out", no, nx);
  if (c.failed) return NULL;
  sy_op_affine(x, (float)scale, (float)shift, out, nx);
  return undef(env);
}

/* extent check of a strided view: every a[Σ idx_d·s_d] within [0, len) */
static int check_strided(call_t *c, const char *name, int64_t len, const int64_t *shape, const int64_t *st, int nd) {
  int64_t lo = 0, hi = 0;
  for (int d = 0; d < nd; d++) {
    if (shape[d] == 0) return 1;
    int64_t span = (shape[d] - 1) * st[d];
    if (span > 0) hi += span;
    else lo += span;
  }
  if (lo < 0 || hi >= len) {
    throw_range(c, "%s has %lld elements, but its strides reach index %lld", name, (long long)len,
                (long long)(lo < 0 ? lo : hi));
    return 0;
  }
  return 1;
}

static napi_value js_binary(napi_env env, napi_callback_info info) {
  call_t c;
  int op;
  float *a, *b, *out;
  int32_t *as32, *bs32, *sh32;
  int64_t na, nb, no, nas, nbs, nsh;
  if (!begin(&c, env, info, "binary", 7)) return NULL;
  arg_op(&c, 0, "op", SY_BINARY_COUNT, &op);
  arg_f32(&c, 1, "a", 0, &a, &na);
  arg_i32(&c, 2, "aStrides", &as32, &nas);
  arg_f32(&c, 3, "b", 0, &b, &nb);
  arg_i32(&c, 4, "bStrides", &bs32, &nbs);
  arg_f32(&c, 5, "out", 0, &out, &no);
  arg_i32(&c, 6, "outShape", &sh32, &nsh);
  if (c.failed) return NULL;
  if (nas != nsh || nbs != nsh) {
    throw_range(&c, "aStrides.length=%lld and bStrides.length=%lld must equal outShape.length=%lld", (long long)nas,
                (long long)nbs, (long long)nsh);
    return NULL;
  }
  if (nsh > SY_MAX_DIMS) {
    throw_range(&c, "outShape has %lld dimensions (max %d)", (long long)nsh, SY_MAX_DIMS);
    return NULL;
  }
  int nd = (int)nsh;
  int64_t shape[SY_MAX_DIMS], as[SY_MAX_DIMS], bs[SY_MAX_DIMS], total = 1;
  for (int d = 0; d < nd; d++) {
    if (sh32[d] < 0) {
      throw_range(&c, "outShape[%d]=%d is negative", d, sh32[d]);
      return NULL;
    }
    shape[d] = sh32[d];
    as[d] = as32[d];
    bs[d] = bs32[d];
    if (!mul_ok(&c, total, shape[d], &total)) return NULL;
  }
  if (no != total) {
    throw_range(&c, "out has %lld elements, outShape describes %lld", (long long)no, (long long)total);
    return NULL;
  }
  if (total == 0) return undef(env);
  if (!check_strided(&c, "a", na, shape, as, nd) || !check_strided(&c, "b", nb, shape, bs, nd)) return NULL;
  sy_op_binary(op, a, as, b, bs, out, shape, nd);
  return undef(env);
}

static napi_value js_reduce(napi_env env, napi_callback_info info) {
  call_t c;
  int op;
  float *x, *out;
  int64_t nx, no, outer, len, inner, tot, oi;
  if (!begin(&c, env, info, "reduce", 6)) return NULL;
  arg_op(&c, 0, "op", SY_REDUCE_COUNT, &op);
  arg_f32(&c, 1, "x", 0, &x, &nx);
  arg_count(&c, 2, "outer", &outer);
  arg_count(&c, 3, "len", &len);
  arg_count(&c, 4, "inner", &inner);
  arg_f32(&c, 5, "out", 0, &out, &no);
  mul_ok(&c, outer, inner, &oi);
  mul_ok(&c, oi, len, &tot);
  need(&c, "x", nx, tot);
  need(&c, "out", no, oi);
  if (c.failed) return NULL;
  sy_op_reduce(op, x, outer, len, inner, out);
  return undef(env);
}

/* ---------------------------------------------------------------------------------------- */
/* row-wise                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static napi_value js_softmax(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *out;
  int64_t nx, no, rows, cols, tot;
  int lg;
  if (!begin(&c, env, info, "softmax", 5)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_count(&c, 1, "rows", &rows);
  arg_count(&c, 2, "cols", &cols);
  arg_bool(&c, 3, "log", &lg);
  arg_f32(&c, 4, "out", 0, &out, &no);
  mul_ok(&c, rows, cols, &tot);
  need(&c, "x", nx, tot);
  need(&c, "out", no, tot);
  if (c.failed) return NULL;
  sy_op_softmax(x, rows, cols, lg, out);
  return undef(env);
}

static napi_value js_softmax_grad(napi_env env, napi_callback_info info) {
  call_t c;
  float *y, *dy, *dx;
  int64_t ny, ndy, ndx, rows, cols, tot;
  int lg;
  if (!begin(&c, env, info, "softmaxGrad", 6)) return NULL;
  arg_f32(&c, 0, "y", 0, &y, &ny);
  arg_f32(&c, 1, "dy", 0, &dy, &ndy);
  arg_count(&c, 2, "rows", &rows);
  arg_count(&c, 3, "cols", &cols);
  arg_bool(&c, 4, "log", &lg);
  arg_f32(&c, 5, "dx", 0, &dx, &ndx);
  mul_ok(&c, rows, cols, &tot);
  need(&c, "y", ny, tot);
  need(&c, "dy", ndy, tot);
  need(&c, "dx", ndx, tot);
  if (c.failed) return NULL;
  sy_op_softmax_grad(y, dy, rows, cols, lg, dx);
  return undef(env);
}

static napi_value js_logsumexp(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *out;
  int64_t nx, no, rows, cols, tot;
  if (!begin(&c, env, info, "logsumexp", 4)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_count(&c, 1, "rows", &rows);
  arg_count(&c, 2, "cols", &cols);
  arg_f32(&c, 3, "out", 0, &out, &no);
  mul_ok(&c, rows, cols, &tot);
  need(&c, "x", nx, tot);
  need(&c, "out", no, rows);
  if (c.failed) return NULL;
  sy_op_logsumexp(x, rows, cols, out);
  return undef(env);
}

static napi_value js_rms_norm(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *w, *out, *rstd;
  int64_t nx, nw, no, nr, rows, cols, tot;
  double eps;
  if (!begin(&c, env, info, "rmsNorm", 7)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_f32(&c, 1, "w", 1, &w, &nw);
  arg_count(&c, 2, "rows", &rows);
  arg_count(&c, 3, "cols", &cols);
  arg_num(&c, 4, "eps", &eps);
  arg_f32(&c, 5, "out", 0, &out, &no);
  arg_f32(&c, 6, "rstd", 0, &rstd, &nr);
  mul_ok(&c, rows, cols, &tot);
  need(&c, "x", nx, tot);
  if (w) need(&c, "w", nw, cols);
  need(&c, "out", no, tot);
  need(&c, "rstd", nr, rows);
  if (c.failed) return NULL;
  sy_op_rms_norm(x, w, rows, cols, (float)eps, out, rstd);
  return undef(env);
}

static napi_value js_rms_norm_grad(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *w, *rstd, *dy, *dx, *dw;
  int64_t nx, nw, nr, ndy, ndx, ndw, rows, cols, tot;
  if (!begin(&c, env, info, "rmsNormGrad", 8)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_f32(&c, 1, "w", 1, &w, &nw);
  arg_f32(&c, 2, "rstd", 0, &rstd, &nr);
  arg_f32(&c, 3, "dy", 0, &dy, &ndy);
  arg_count(&c, 4, "rows", &rows);
  arg_count(&c, 5, "cols", &cols);
  arg_f32(&c, 6, "dx", 0, &dx, &ndx);
  arg_f32(&c, 7, "dw", 1, &dw, &ndw);
  mul_ok(&c, rows, cols, &tot);
  need(&c, "x", nx, tot);
  if (w) need(&c, "w", nw, cols);
  need(&c, "rstd", nr, rows);
  need(&c, "dy", ndy, tot);
  need(&c, "dx", ndx, tot);
  if (dw && w) need(&c, "dw", ndw, cols);
  if (c.failed) return NULL;
  sy_op_rms_norm_grad(x, w, rstd, dy, rows, cols, dx, dw);
  return undef(env);
}

static napi_value js_layer_norm(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *w, *b, *out, *mean, *rstd;
  int64_t nx, nw, nb, no, nm, nr, rows, cols, tot;
  double eps;
  if (!begin(&c, env, info, "layerNorm", 9)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_f32(&c, 1, "w", 1, &w, &nw);
  arg_f32(&c, 2, "b", 1, &b, &nb);
  arg_count(&c, 3, "rows", &rows);
  arg_count(&c, 4, "cols", &cols);
  arg_num(&c, 5, "eps", &eps);
  arg_f32(&c, 6, "out", 0, &out, &no);
  arg_f32(&c, 7, "mean", 0, &mean, &nm);
  arg_f32(&c, 8, "rstd", 0, &rstd, &nr);
  mul_ok(&c, rows, cols, &tot);
  need(&c, "x", nx, tot);
  if (w) need(&c, "w", nw, cols);
  if (b) need(&c, "b", nb, cols);
  need(&c, "out", no, tot);
  need(&c, "mean", nm, rows);
  need(&c, "rstd", nr, rows);
  if (c.failed) return NULL;
  sy_op_layer_norm(x, w, b, rows, cols, (float)eps, out, mean, rstd);
  return undef(env);
}

static napi_value js_layer_norm_grad(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *w, *mean, *rstd, *dy, *dx, *dw, *db;
  int64_t nx, nw, nm, nr, ndy, ndx, ndw, ndb, rows, cols, tot;
  if (!begin(&c, env, info, "layerNormGrad", 10)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_f32(&c, 1, "w", 1, &w, &nw);
  arg_f32(&c, 2, "mean", 0, &mean, &nm);
  arg_f32(&c, 3, "rstd", 0, &rstd, &nr);
  arg_f32(&c, 4, "dy", 0, &dy, &ndy);
  arg_count(&c, 5, "rows", &rows);
  arg_count(&c, 6, "cols", &cols);
  arg_f32(&c, 7, "dx", 0, &dx, &ndx);
  arg_f32(&c, 8, "dw", 1, &dw, &ndw);
  arg_f32(&c, 9, "db", 1, &db, &ndb);
  mul_ok(&c, rows, cols, &tot);
  need(&c, "x", nx, tot);
  if (w) need(&c, "w", nw, cols);
  need(&c, "mean", nm, rows);
  need(&c, "rstd", nr, rows);
  need(&c, "dy", ndy, tot);
  need(&c, "dx", ndx, tot);
  if (dw && w) need(&c, "dw", ndw, cols);
  if (db) need(&c, "db", ndb, cols);
  if (c.failed) return NULL;
  sy_op_layer_norm_grad(x, w, mean, rstd, dy, rows, cols, dx, dw, db);
  return undef(env);
}

static napi_value js_permute(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *out;
  int32_t *sh, *pm;
  int64_t nx, no, nsh, npm;
  if (!begin(&c, env, info, "permute", 4)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_i32(&c, 1, "shape", &sh, &nsh);
  arg_i32(&c, 2, "perm", &pm, &npm);
  arg_f32(&c, 3, "out", 0, &out, &no);
  if (c.failed) return NULL;
  if (npm != nsh) {
    throw_range(&c, "perm.length=%lld must equal shape.length=%lld", (long long)npm, (long long)nsh);
    return NULL;
  }
  if (nsh > SY_MAX_DIMS) {
    throw_range(&c, "shape has %lld dimensions (max %d)", (long long)nsh, SY_MAX_DIMS);
    return NULL;
  }
  int nd = (int)nsh;
  int64_t shape[SY_MAX_DIMS], total = 1;
  int perm[SY_MAX_DIMS], seen[SY_MAX_DIMS] = {0};
  for (int d = 0; d < nd; d++) {
    if (sh[d] < 0) {
      throw_range(&c, "shape[%d]=%d is negative", d, sh[d]);
      return NULL;
    }
    if (pm[d] < 0 || pm[d] >= nd || seen[pm[d]]) {
      throw_range(&c, "perm is not a permutation of 0..%d", nd - 1);
      return NULL;
    }
    seen[pm[d]] = 1;
    perm[d] = pm[d];
    shape[d] = sh[d];
    if (!mul_ok(&c, total, shape[d], &total)) return NULL;
  }
  if (!need(&c, "x", nx, total)) return NULL;
  if (no != total) {
    throw_range(&c, "out has %lld elements, the permuted shape has %lld", (long long)no, (long long)total);
    return NULL;
  }
  sy_op_permute(x, shape, perm, nd, out);
  return undef(env);
}

/* Every idx[i] a row of a [rows, cols] matrix; else a RangeError naming the first that is not. */
static int check_row_indices(call_t *c, const int32_t *idx, int64_t n, int64_t rows) {
  for (int64_t i = 0; i < n; i++)
    if (idx[i] < 0 || idx[i] >= rows) {
      throw_range(c, "idx[%lld]=%d is out of range [0, %lld)", (long long)i, idx[i], (long long)rows);
      return 0;
    }
  return 1;
}

/* topKRows(x, rows, cols, k, values, indices) */
static napi_value js_topk_rows(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *vals;
  int32_t *inds;
  int64_t nx, nv, ni, rows, cols, k, tot, ktot;
  if (!begin(&c, env, info, "topKRows", 6)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_count(&c, 1, "rows", &rows);
  arg_count(&c, 2, "cols", &cols);
  arg_count(&c, 3, "k", &k);
  arg_f32(&c, 4, "values", 0, &vals, &nv);
  arg_i32(&c, 5, "indices", &inds, &ni);
  if (c.failed) return NULL;
  if (k > cols) {
    throw_range(&c, "k=%lld is more than cols=%lld", (long long)k, (long long)cols);
    return NULL;
  }
  mul_ok(&c, rows, cols, &tot);
  mul_ok(&c, rows, k, &ktot);
  need(&c, "x", nx, tot);
  need(&c, "values", nv, ktot);
  need(&c, "indices", ni, ktot);
  if (c.failed) return NULL;
  sy_op_topk_rows(x, rows, cols, k, vals, inds);
  return undef(env);
}

static napi_value js_gather_rows(napi_env env, napi_callback_info info) {
  call_t c;
  float *src, *out;
  int32_t *idx;
  int64_t ns, ni, no, cols, tot;
  if (!begin(&c, env, info, "gatherRows", 4)) return NULL;
  arg_f32(&c, 0, "src", 0, &src, &ns);
  arg_i32(&c, 1, "idx", &idx, &ni);
  arg_count(&c, 2, "cols", &cols);
  arg_f32(&c, 3, "out", 0, &out, &no);
  mul_ok(&c, ni, cols, &tot);
  need(&c, "out", no, tot);
  if (c.failed) return NULL;
  if (cols > 0 && !check_row_indices(&c, idx, ni, ns / cols)) return NULL;
  sy_op_gather_rows(src, idx, ni, cols, out);
  return undef(env);
}

/* gatherRowsScaled(g, idx, cols, w, out, dotWith|null, dot|null) */
static napi_value js_gather_rows_scaled(napi_env env, napi_callback_info info) {
  call_t c;
  float *g, *w, *out, *dw, *dot;
  int32_t *idx;
  int64_t ng, ni, nw, no, ndw, nd, cols, tot;
  if (!begin(&c, env, info, "gatherRowsScaled", 7)) return NULL;
  arg_f32(&c, 0, "g", 0, &g, &ng);
  arg_i32(&c, 1, "idx", &idx, &ni);
  arg_count(&c, 2, "cols", &cols);
  arg_f32(&c, 3, "w", 0, &w, &nw);
  arg_f32(&c, 4, "out", 0, &out, &no);
  arg_f32(&c, 5, "dotWith", 1, &dw, &ndw);
  arg_f32(&c, 6, "dot", 1, &dot, &nd);
  mul_ok(&c, ni, cols, &tot);
  need(&c, "w", nw, ni);
  need(&c, "out", no, tot);
  if (c.failed) return NULL;
  /* by the arguments, not the pointers: an empty array may have no data pointer */
  int with_dot = !is_nullish(&c, c.argv[5]);
  if (with_dot == is_nullish(&c, c.argv[6])) {
    throw_type(&c, "dotWith and dot must both be Float32Arrays or both null");
    return NULL;
  }
  if (with_dot) {
    need(&c, "dotWith", ndw, tot);
    need(&c, "dot", nd, ni);
    if (c.failed) return NULL;
  }
  if (cols > 0 && !check_row_indices(&c, idx, ni, ng / cols)) return NULL;
  sy_op_gather_rows_scaled(g, idx, ni, cols, w, out, with_dot ? dw : NULL, with_dot ? dot : NULL);
  return undef(env);
}

static napi_value js_scatter_add_rows(napi_env env, napi_callback_info info) {
  call_t c;
  float *src, *w, *out;
  int32_t *idx;
  int64_t ns, ni, nw, no, cols, tot;
  if (!begin(&c, env, info, "scatterAddRows", 5)) return NULL;
  arg_f32(&c, 0, "src", 0, &src, &ns);
  arg_i32(&c, 1, "idx", &idx, &ni);
  arg_f32(&c, 2, "w", 1, &w, &nw);
  arg_count(&c, 3, "cols", &cols);
  arg_f32(&c, 4, "out", 0, &out, &no);
  mul_ok(&c, ni, cols, &tot);
  need(&c, "src", ns, tot);
  if (w) need(&c, "w", nw, ni);
  if (c.failed) return NULL;
  int64_t rows = cols > 0 ? no / cols : 0;
  if (cols > 0 && !check_row_indices(&c, idx, ni, rows)) return NULL;
  sy_op_scatter_add_rows(src, idx, w, ni, cols, out, rows);
  return undef(env);
}

static napi_value js_row_dot(napi_env env, napi_callback_info info) {
  call_t c;
  float *a, *b, *out;
  int64_t na, nb, no, rows, cols, tot;
  if (!begin(&c, env, info, "rowDot", 5)) return NULL;
  arg_f32(&c, 0, "a", 0, &a, &na);
  arg_f32(&c, 1, "b", 0, &b, &nb);
  arg_count(&c, 2, "rows", &rows);
  arg_count(&c, 3, "cols", &cols);
  arg_f32(&c, 4, "out", 0, &out, &no);
  mul_ok(&c, rows, cols, &tot);
  need(&c, "a", na, tot);
  need(&c, "b", nb, tot);
  need(&c, "out", no, rows);
  if (c.failed) return NULL;
  sy_op_row_dot(a, b, rows, cols, out);
  return undef(env);
}

/* loraMixture(x, router|null, A, B, scales, dims, experts, gates, logits|null, y); dims = [rows, d, out, n, k, mode, ranks[n]] (native/lora.c). */
static napi_value js_lora_mixture(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *router, *A, *B, *scales, *gates, *logits, *y;
  int32_t *dims, *experts;
  int64_t nx, nr, na, nb, ns, nd, ne, ng, nl, ny;
  if (!begin(&c, env, info, "loraMixture", 10)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_f32(&c, 1, "router", 1, &router, &nr);
  arg_f32(&c, 2, "A", 0, &A, &na);
  arg_f32(&c, 3, "B", 0, &B, &nb);
  arg_f32(&c, 4, "scales", 0, &scales, &ns);
  arg_i32(&c, 5, "dims", &dims, &nd);
  arg_i32(&c, 6, "experts", &experts, &ne);
  arg_f32(&c, 7, "gates", 0, &gates, &ng);
  arg_f32(&c, 8, "logits", 1, &logits, &nl);
  arg_f32(&c, 9, "y", 0, &y, &ny);
  if (c.failed) return NULL;
  if (nd < 6 || dims[3] < 1 || nd < 6 + (int64_t)dims[3]) {
    throw_range(&c, "dims must be [rows, d, out, n, k, mode, ranks[n]] with n >= 1");
    return NULL;
  }
  int64_t rows = dims[0], d = dims[1], out = dims[2], n = dims[3], k = dims[4], mode = dims[5], sumR = 0, tot;
  if (rows < 0 || d < 0 || out < 0) {
    throw_range(&c, "dims: rows, d and out must be non-negative");
    return NULL;
  }
  if (mode < 0 || mode > 3) {
    throw_range(&c, "dims: mode %lld is not 0-3", (long long)mode);
    return NULL;
  }
  if (k < 1 || k > n || ((mode == 2 || mode == 3) && k != n)) {
    throw_range(&c, "dims: k=%lld must be in [1, n=%lld] (and equal n for modes 2, 3)", (long long)k, (long long)n);
    return NULL;
  }
  for (int64_t e = 0; e < n; e++) {
    if (dims[6 + e] < 0) {
      throw_range(&c, "dims: ranks[%lld]=%d is negative", (long long)e, dims[6 + e]);
      return NULL;
    }
    sumR += dims[6 + e];
  }
  if (mode != 3 && !router) {
    throw_type(&c, "router must be a Float32Array unless mode is 3");
    return NULL;
  }
  mul_ok(&c, rows, d, &tot);
  need(&c, "x", nx, tot);
  if (mode != 3) mul_ok(&c, n, d, &tot), need(&c, "router", nr, tot);
  mul_ok(&c, sumR, d, &tot);
  need(&c, "A", na, tot);
  mul_ok(&c, sumR, out, &tot);
  need(&c, "B", nb, tot);
  need(&c, "scales", ns, n);
  mul_ok(&c, rows, k, &tot);
  need(&c, "experts", ne, tot);
  need(&c, "gates", ng, tot);
  if (logits) mul_ok(&c, rows, n, &tot), need(&c, "logits", nl, tot);
  mul_ok(&c, rows, out, &tot);
  need(&c, "y", ny, tot);
  if (c.failed) return NULL;
  sy_op_lora_mixture(x, router, A, B, scales, rows, d, out, n, k, (int)mode, dims + 6, experts, gates, logits, y);
  return undef(env);
}

static napi_value js_rotary(napi_env env, napi_callback_info info) {
  call_t c;
  float *x, *out, *cs, *sn;
  int64_t nx, no, ncs, nsn, rows, seq, heads, dim, start, tot;
  int inverse;
  if (!begin(&c, env, info, "rotary", 10)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  arg_f32(&c, 1, "out", 0, &out, &no);
  arg_f32(&c, 2, "cos", 0, &cs, &ncs);
  arg_f32(&c, 3, "sin", 0, &sn, &nsn);
  arg_count(&c, 4, "rows", &rows);
  arg_count(&c, 5, "seqLen", &seq);
  arg_count(&c, 6, "heads", &heads);
  arg_count(&c, 7, "dim", &dim);
  arg_count(&c, 8, "startPos", &start);
  arg_bool(&c, 9, "inverse", &inverse);
  if (!c.failed && (dim % 2 != 0 || seq < 1 || heads < 1)) {
    throw_range(&c, "rotary: dim %lld must be even and seqLen %lld, heads %lld >= 1", (long long)dim, (long long)seq,
                (long long)heads);
  }
  mul_ok(&c, rows, dim, &tot);
  need(&c, "x", nx, tot);
  need(&c, "out", no, tot);
  /* positions start .. start + seq - 1 must be in the tables */
  need(&c, "cos", ncs, (start + seq) * (dim / 2));
  need(&c, "sin", nsn, (start + seq) * (dim / 2));
  if (c.failed) return NULL;
  sy_op_rotary(x, out, cs, sn, rows, seq, heads, dim, start, inverse);
  return undef(env);
}

/* ---------------------------------------------------------------------------------------- */
/* optimizer                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static napi_value js_sum_squares(napi_env env, napi_callback_info info) {
  call_t c;
  float *x;
  int64_t nx;
  if (!begin(&c, env, info, "sumSquares", 1)) return NULL;
  arg_f32(&c, 0, "x", 0, &x, &nx);
  if (c.failed) return NULL;
  napi_value v;
  napi_create_double(env, sy_op_sum_squares(x, nx), &v);
  return v;
}

/* RangeError if the first n floats of a and b share memory (the fused kernel reads and writes
 * each buffer once per element, vectorised: aliased state would not match the reference). */
static int disjoint(call_t *c, const char *an, const float *a, const char *bn, const float *b, int64_t n) {
  if (c->failed || !a || !b || n == 0) return !c->failed;
  uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b, bytes = (uintptr_t)n * sizeof(float);
  if (a0 < b0 + bytes && b0 < a0 + bytes) {
    throw_range(c, "%s and %s overlap (they must be distinct buffers)", an, bn);
    return 0;
  }
  return 1;
}

static napi_value js_adamw(napi_env env, napi_callback_info info) {
  call_t c;
  float *p, *g, *m, *v, *vmax;
  int64_t np, ng, nm, nv, nvm;
  sy_adamw_hyper h;
  if (!begin(&c, env, info, "adamw", 12)) return NULL;
  arg_f32(&c, 0, "p", 0, &p, &np);
  arg_f32(&c, 1, "grad", 0, &g, &ng);
  arg_f32(&c, 2, "m", 0, &m, &nm);
  arg_f32(&c, 3, "v", 0, &v, &nv);
  arg_f32(&c, 4, "vmax", 1, &vmax, &nvm);
  arg_num(&c, 5, "beta1", &h.beta1);
  arg_num(&c, 6, "beta2", &h.beta2);
  arg_num(&c, 7, "stepSize", &h.step_size);
  arg_num(&c, 8, "bc2Sqrt", &h.bc2_sqrt);
  arg_num(&c, 9, "eps", &h.eps);
  arg_num(&c, 10, "decay", &h.decay);
  arg_num(&c, 11, "sign", &h.sign);
  need(&c, "grad", ng, np);
  need(&c, "m", nm, np);
  need(&c, "v", nv, np);
  /* test the argument, not the pointer: an empty Float32Array may have a NULL data pointer */
  if (!c.failed && !is_nullish(&c, c.argv[4])) need(&c, "vmax", nvm, np);
  const char *names[5] = {"p", "grad", "m", "v", "vmax"};
  const float *bufs[5] = {p, g, m, v, vmax};
  for (int i = 0; i < 5; i++)
    for (int j = i + 1; j < 5; j++) disjoint(&c, names[i], bufs[i], names[j], bufs[j], np);
  if (c.failed) return NULL;
  sy_op_adamw(p, g, m, v, vmax, np, &h);
  return undef(env);
}

/* ---------------------------------------------------------------------------------------- */
/* runtime                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* alignOffset(buffer, align): the byte offset into an ArrayBuffer at which its memory is aligned to
 * `align` (a power of two up to 64 KiB), for src/backend/alloc.ts. With glibc a large backing store
 * starts 16 bytes past a page boundary, so without this every 64-byte vector access to a
 * [rows, cols] activation straddles two cache lines and every 4 KiB row two pages. */
static napi_value js_align_offset(napi_env env, napi_callback_info info) {
  call_t c;
  int64_t align;
  if (!begin(&c, env, info, "alignOffset", 2)) return NULL;
  bool is_ab = false;
  void *data = NULL;
  size_t len = 0;
  if (napi_is_arraybuffer(env, c.argv[0], &is_ab) != napi_ok || !is_ab ||
      napi_get_arraybuffer_info(env, c.argv[0], &data, &len) != napi_ok) {
    throw_type(&c, "buffer must be an ArrayBuffer");
    return NULL;
  }
  if (!arg_count(&c, 1, "align", &align)) return NULL;
  if (align < 1 || align > 65536 || (align & (align - 1)) != 0) {
    throw_range(&c, "align must be a power of two in [1, 65536] (got %lld)", (long long)align);
    return NULL;
  }
  int64_t off = (int64_t)((align - (int64_t)((uintptr_t)data & (uintptr_t)(align - 1))) & (align - 1));
  napi_value v;
  napi_create_int64(env, off, &v);
  return v;
}

static napi_value js_threads(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_int32(env, sy_threads(), &v);
  return v;
}

static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  call_t c;
  int64_t n;
  if (!begin(&c, env, info, "setThreads", 1)) return NULL;
  if (!arg_count(&c, 0, "n", &n)) return NULL;
  napi_value v;
  napi_create_int32(env, sy_set_threads(n > 4096 ? 4096 : (int)n), &v);
  return v;
}

static napi_value js_default_threads(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_int32(env, sy_initial_threads(), &v);
  return v;
}

static napi_value js_isa(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_string_utf8(env, sy_isa_name(), NAPI_AUTO_LENGTH, &v);
  return v;
}

static napi_value js_set_isa(napi_env env, napi_callback_info info) {
  call_t c;
  if (!begin(&c, env, info, "setIsa", 1)) return NULL;
  char name[32] = {0};
  size_t len = 0;
  if (napi_get_value_string_utf8(env, c.argv[0], name, sizeof name, &len) != napi_ok) {
    throw_type(&c, "name must be a string");
    return NULL;
  }
  napi_value v;
  napi_get_boolean(env, sy_force_isa(name) != 0, &v);
  return v;
}

/* ---------------------------------------------------------------------------------------- */
/* Self-check of the pool's early claiming, for the test suite                               */
/* ---------------------------------------------------------------------------------------- */

/* claimProbe(items, nested): one parallel job of `items` items, each of which claims its thread's
 * next item early (sy_parallel_claim_ahead, twice: the answers must agree) and, when nested, first
 * runs a 3-item job of its own (inline when the pool is busy) checked the same way. Returns
 * Int32Array [runs of item 0..n-1, nested items run, early claims made, violations]: a violation
 * is an item run other than once, a thread running something other than the item it claimed, or
 * two claims in one item disagreeing. */
#define PROBE_NESTED 3
typedef struct {
  int64_t n;
  int nested;
  int *runs;
  int nested_runs, claims, violations;
  int64_t expect[256]; /* per tid: the item claimed early by the thread's previous item, or -1 */
} probe_ctx;

static probe_ctx *probe_new(int64_t n, int nested) {
  probe_ctx *p = (probe_ctx *)calloc(1, sizeof(probe_ctx));
  int *runs = (int *)calloc((size_t)n + 1, sizeof(int));
  if (!p || !runs) abort();
  p->n = n;
  p->nested = nested;
  p->runs = runs;
  for (int i = 0; i < 256; i++) p->expect[i] = -1;
  return p;
}

static void probe_free(probe_ctx *p) {
  free(p->runs);
  free(p);
}

static void probe_item(void *vc, int64_t item, int tid) {
  probe_ctx *c = (probe_ctx *)vc;
  if (c->expect[tid] >= 0 && c->expect[tid] != item) __atomic_fetch_add(&c->violations, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&c->runs[item], 1, __ATOMIC_RELAXED);
  if (c->nested) {
    probe_ctx *q = probe_new(PROBE_NESTED, 0);
    sy_parallel_for(PROBE_NESTED, probe_item, q);
    int bad = q->violations;
    for (int i = 0; i < PROBE_NESTED; i++) bad += q->runs[i] != 1;
    __atomic_fetch_add(&c->violations, bad, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->nested_runs, PROBE_NESTED, __ATOMIC_RELAXED);
    probe_free(q);
  }
  volatile double s = 0;
  for (int i = 0; i < 2000; i++) s += i; /* long enough for the threads to interleave */
  int64_t a = sy_parallel_claim_ahead(), b = sy_parallel_claim_ahead();
  if (a != b || a >= c->n || (a >= 0 && a <= item)) __atomic_fetch_add(&c->violations, 1, __ATOMIC_RELAXED);
  if (a >= 0) __atomic_fetch_add(&c->claims, 1, __ATOMIC_RELAXED);
  c->expect[tid] = a;
}

static napi_value js_claim_probe(napi_env env, napi_callback_info info) {
  call_t c;
  int64_t n;
  bool nested = false;
  if (!begin(&c, env, info, "claimProbe", 2)) return NULL;
  if (!arg_count(&c, 0, "items", &n)) return NULL;
  if (n > 1 << 20) {
    throw_range(&c, "items must be at most 2^20 (got %lld)", (long long)n);
    return NULL;
  }
  if (napi_get_value_bool(env, c.argv[1], &nested) != napi_ok) {
    throw_type(&c, "nested must be a boolean");
    return NULL;
  }
  probe_ctx *p = probe_new(n, nested);
  sy_parallel_for(n, probe_item, p);
  napi_value ab, out;
  void *data;
  napi_create_arraybuffer(env, sizeof(int32_t) * ((size_t)n + 3), &data, &ab);
  int32_t *o = (int32_t *)data;
  for (int64_t i = 0; i < n; i++) o[i] = p->runs[i];
  o[n] = p->nested_runs;
  o[n + 1] = p->claims;
  o[n + 2] = p->violations;
  napi_create_typedarray(env, napi_int32_array, (size_t)n + 3, ab, 0, &out);
  probe_free(p);
  return out;
}

static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

NAPI_MODULE_INIT() {
  pthread_once(&isa_once, sy_select_isa);
  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"gemm", js_gemm},
      {"gemmGated", js_gemm_gated},
      {"unary", js_unary},
      {"unaryGrad", js_unary_grad},
      {"gatedAct", js_gated},
      {"gatedActGrad", js_gated_grad},
      {"affine", js_affine},
      {"binary", js_binary},
      {"reduce", js_reduce},
      {"softmax", js_softmax},
      {"softmaxGrad", js_softmax_grad},
      {"logsumexp", js_logsumexp},
      {"rmsNorm", js_rms_norm},
      {"rmsNormGrad", js_rms_norm_grad},
      {"layerNorm", js_layer_norm},
      {"layerNormGrad", js_layer_norm_grad},
      {"permute", js_permute},
      {"gatherRows", js_gather_rows},
      {"scatterAddRows", js_scatter_add_rows},
      {"rowDot", js_row_dot},
      {"topKRows", js_topk_rows},
      {"gatherRowsScaled", js_gather_rows_scaled},
      {"loraMixture", js_lora_mixture},
      {"rotary", js_rotary},
      {"sumSquares", js_sum_squares},
      {"adamw", js_adamw},
      {"alignOffset", js_align_offset},
      {"threads", js_threads},
      {"setThreads", js_set_threads},
      {"defaultThreads", js_default_threads},
      {"isa", js_isa},
      {"setIsa", js_set_isa},
      {"claimProbe", js_claim_probe},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &f) != napi_ok) return NULL;
    if (napi_set_named_property(env, exports, fns[i].name, f) != napi_ok) return NULL;
  }
  return exports;
}
