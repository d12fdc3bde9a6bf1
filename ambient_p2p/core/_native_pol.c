/* Optional compiled PoL fingerprint kernel (spec/pol.md, "Fingerprint" and "Cost"): the
 * top-k and the log-normaliser of one float32 logits row in two passes over the row, with
 * no allocation and one C call per generated token.
 *
 *   pass 1: the maximum of every block of BLOCK logits (and so the row maximum);
 *   top-k:  the k blocks with the largest maxima (ties: lower block first), then the k
 *           largest entries of those k * BLOCK logits, largest first, ties by lower index.
 *           Exact: every entry outside the chosen blocks is <= the maximum of each chosen
 *           block, so it is at most tied with the k-th value. The first entry is the row's
 *           argmax (its first occurrence), the greedy token.
 *   pass 2: s = sum_u exp(x[u] - m) with m the row maximum: a float32 exp (on CPUs with
 *           AVX-512 a 32-entry table of 2^(j/32), one permute instruction, and a degree-3
 *           polynomial, relative error < 2e-7; elsewhere Cephes' degree-5 polynomial,
 *           < 1e-7; arguments below -86 are clamped there, contributing < 4.5e-38 each),
 *           summed in float32 over the BLOCK entries of a block (8 terms per lane) and in
 *           float64 across blocks, so the relative error of s is below 1e-6 and the error
 *           of lse = m + log(s) (float64) below 1e-6 nats, 0.004 grid units.
 *   result: ids (top-k indices) and lps = (double)x[id] - lse, float64.
 *
 * The arithmetic is written on GCC vector types, one lane per element with no
 * reassociation and no FMA contraction (pragma below), so a build gives the same bits for
 * the same row every time, whichever clone (AVX-512, AVX2, baseline) runs pass 1, and the
 * AVX-512 and the other exp each give the same bits on every machine that runs them. It is
 * not bit-identical to ATen's float32 logsumexp (a different exp and summation order); both
 * are within 1e-5 nats of the float64 definition, what spec/pol.md ("Fingerprint") allows a
 * miner: such a deviation moves a quantized value only when it lies within 0.04 units of a
 * rounding boundary, by one unit, which the tolerance absorbs.
 *
 * Built by scripts/setup.sh when gcc and the Python headers are present; without it
 * ambient_p2p.model.runner uses the torch path. No state, no I/O. */
#pragma GCC optimize("fp-contract=off")
/* the helpers pass 64-byte vectors between inlined functions only (no ABI boundary) */
#pragma GCC diagnostic ignored "-Wpsabi"
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 128
#define LANES 16
#define MAX_K 64
/* exp argument floor: exp(-86) * 2 stays a normal float, so 2^n below never denormalises */
#define EXP_ARG_MIN (-86.0f)

typedef float v16sf __attribute__((vector_size(64)));
typedef int32_t v16si __attribute__((vector_size(64)));
typedef double v16df __attribute__((vector_size(128)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define CLONES_NO512 __attribute__((target_clones("avx2", "default")))
#define HAVE_AVX512_PATH 1
#else
#define CLONES
#define CLONES_NO512
#define HAVE_AVX512_PATH 0
#endif

static inline v16sf load16(const float *p) {
    v16sf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline v16sf vsplat(float a) {
    return (v16sf){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a};
}

/* lane-wise maximum (a macro: 64-byte vectors passed by value make GCC print an ABI note) */
#define vmax(a, b)                                                                                            \
    __extension__({                                                                                           \
        v16sf a_ = (a), b_ = (b);                                                                             \
        v16si m_ = a_ > b_;                                                                                   \
        (v16sf)(((v16si)a_ & m_) | ((v16si)b_ & ~m_));                                                         \
    })

/* 2^(j/32), j = 0..31, rounded to float32 (printed with 9 significant digits: exact) */
static const float EXP2_TAB[32] __attribute__((aligned(64))) = {1.000000000e+00f, 1.021897197e+00f, 1.044273734e+00f, 1.067140460e+00f, 1.090507746e+00f, 1.114386797e+00f, 1.138788581e+00f, 1.163724899e+00f, 1.189207077e+00f, 1.215247393e+00f, 1.241857767e+00f, 1.269050956e+00f, 1.296839595e+00f, 1.325236678e+00f, 1.354255557e+00f, 1.383909941e+00f, 1.414213538e+00f, 1.445180774e+00f, 1.476826191e+00f, 1.509164453e+00f, 1.542210817e+00f, 1.575980902e+00f, 1.610490322e+00f, 1.645755529e+00f, 1.681792855e+00f, 1.718619347e+00f, 1.756252170e+00f, 1.794709086e+00f, 1.834008098e+00f, 1.874167681e+00f, 1.915206552e+00f, 1.957144141e+00f};

/* exp of each lane, d <= 0: d = (32 q + j) ln2/32 + r with |r| <= ln2/64, exp(d) =
 * 2^q * 2^(j/32) * (1 + r + r^2/2 + r^3/6); relative error < 2e-7 on [-86, 0] (truncation
 * 5.7e-10, the rest rounding; tests/test_hot_pol.py checks it against float64 exp). NaN
 * propagates: the clamp keeps it and every later step uses it. */
static inline v16sf vexp_tab(const v16sf *dp) {
    v16sf d = *dp; /* by address: 64-byte vectors passed by value make GCC print an ABI note */
    v16si low = d < vsplat(EXP_ARG_MIN);
    d = (v16sf)(((v16si)vsplat(EXP_ARG_MIN) & low) | ((v16si)d & ~low));
    /* n = round(d * 32 / ln 2): adding 1.5 * 2^23 rounds to an integer (to nearest even) */
    v16sf t = d * vsplat(46.16624069213867f) + vsplat(12582912.0f);
    v16sf n = t - vsplat(12582912.0f);
    v16si ni = (v16si)t - 0x4B400000;
    /* r = d - n ln2/32, ln2/32 in two parts (the first has 12 bits, so n * it is exact) */
    v16sf r = d - n * vsplat(0.02165985107421875f);
    r = r - n * vsplat(9.983182280848268e-07f);
    v16sf z = r * r;
    v16sf y = r * vsplat(0.166666672f) + vsplat(0.5f);
    y = z * y + r;
    y = y + vsplat(1.0f);
    v16sf lo, hi;
    memcpy(&lo, EXP2_TAB, sizeof lo);
    memcpy(&hi, EXP2_TAB + LANES, sizeof hi);
    v16sf tab = __builtin_shuffle(lo, hi, ni & 31);
    /* 2^q with q = n >> 5 (arithmetic shift: floor), added to tab's exponent field; q >= -125
     * on [-86, 0], so the product stays a normal float */
    v16sf scale = (v16sf)((v16si)tab + ((ni >> 5) << 23));
    return y * scale;
}

/* exp of each lane, d <= 0, without a table (the other builds: a 32-entry permute is one
 * instruction only with AVX-512): Cephes' range reduction and degree-5 polynomial,
 * relative error < 1e-7 on [-86, 0]. NaN propagates. */
static inline v16sf vexp_poly(const v16sf *dp) {
    v16sf d = *dp; /* by address: 64-byte vectors passed by value make GCC print an ABI note */
    v16si low = d < vsplat(EXP_ARG_MIN);
    d = (v16sf)(((v16si)vsplat(EXP_ARG_MIN) & low) | ((v16si)d & ~low));
    /* n = round(d / ln 2): adding 1.5 * 2^23 rounds to an integer (to nearest even) */
    v16sf t = d * vsplat(1.44269504088896341f) + vsplat(12582912.0f);
    v16sf n = t - vsplat(12582912.0f);
    v16si ni = (v16si)t - 0x4B400000;
    /* r = d - n ln 2, ln 2 in two parts (the first has 9 bits, so n * it is exact) */
    v16sf r = d - n * vsplat(0.693359375f);
    r = r - n * vsplat(-2.12194440e-4f);
    v16sf z = r * r;
    v16sf y = vsplat(1.9875691500e-4f);
    y = y * r + vsplat(1.3981999507e-3f);
    y = y * r + vsplat(8.3334519073e-3f);
    y = y * r + vsplat(4.1665795894e-2f);
    y = y * r + vsplat(1.6666665459e-1f);
    y = y * r + vsplat(5.0000001201e-1f);
    y = y * z + r;
    y = y + vsplat(1.0f);
    v16sf scale = (v16sf)((ni + 127) << 23);
    return y * scale;
}

/* Pass 1: block maxima of the full blocks; returns the row maximum (tail included). */
CLONES static float block_maxima(const float *x, Py_ssize_t n, float *bmax) {
    Py_ssize_t nb = n / BLOCK;
    float m = x[0];
    for (Py_ssize_t b = 0; b < nb; b++) {
        const float *p = x + b * BLOCK;
        v16sf a = load16(p);
        for (int j = LANES; j < BLOCK; j += LANES)
            a = vmax(a, load16(p + j));
        float bm = a[0];
        for (int j = 1; j < LANES; j++)
            bm = a[j] > bm ? a[j] : bm;
        bmax[b] = bm;
        m = bm > m ? bm : m;
    }
    for (Py_ssize_t i = nb * BLOCK; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

/* Pass 2: sum of exp(x - m) over the row (float32 per block lane, float64 across blocks);
 * the tail past the last full block one element at a time with the same exp. */
#define EXP_SUM_BODY(VEXP)                                                                                    \
    Py_ssize_t nb = n / BLOCK;                                                                                \
    v16df acc = {0};                                                                                          \
    v16sf vm = vsplat(m);                                                                                     \
    for (Py_ssize_t b = 0; b < nb; b++) {                                                                     \
        const float *p = x + b * BLOCK;                                                                       \
        v16sf d = load16(p) - vm;                                                                             \
        v16sf s = VEXP(&d);                                                                                   \
        for (int j = LANES; j < BLOCK; j += LANES) {                                                          \
            d = load16(p + j) - vm;                                                                           \
            s = s + VEXP(&d);                                                                                 \
        }                                                                                                     \
        acc = acc + __builtin_convertvector(s, v16df);                                                        \
    }                                                                                                         \
    double total = 0.0;                                                                                       \
    for (int j = 0; j < LANES; j++)                                                                           \
        total += acc[j];                                                                                      \
    for (Py_ssize_t i = nb * BLOCK; i < n; i++) {                                                             \
        v16sf d = vsplat(x[i] - m);                                                                           \
        total += (double)VEXP(&d)[0];                                                                         \
    }                                                                                                         \
    return total;

CLONES_NO512 static double exp_sum_poly(const float *x, Py_ssize_t n, float m) {
    EXP_SUM_BODY(vexp_poly)
}

#if HAVE_AVX512_PATH
__attribute__((target("avx512f"))) static double exp_sum_tab(const float *x, Py_ssize_t n, float m) {
    EXP_SUM_BODY(vexp_tab)
}
#endif

/* The table exp where the CPU has AVX-512 (decided once), the polynomial elsewhere or when
 * the environment has AMBIENT_POL_EXP=poly (what tests/test_hot_pol.py uses to check the
 * polynomial path on an AVX-512 machine). Each is deterministic, so one machine always
 * computes the same bits for the same row; the two differ from each other in the last
 * bits, both within the bound above. */
static double exp_sum(const float *x, Py_ssize_t n, float m) {
#if HAVE_AVX512_PATH
    static int avx512 = -1;
    if (avx512 < 0) {
        const char *force = getenv("AMBIENT_POL_EXP");
        __builtin_cpu_init();
        avx512 = __builtin_cpu_supports("avx512f") && !(force != NULL && strcmp(force, "poly") == 0) ? 1 : 0;
    }
    if (avx512)
        return exp_sum_tab(x, n, m);
#endif
    return exp_sum_poly(x, n, m);
}

/* insert (v, i) into the descending list (vals, idx) of length *cnt <= k; on equal values
 * the entry inserted earlier stays first (callers insert in ascending index order) */
static void insert_top(float v, Py_ssize_t i, float *vals, Py_ssize_t *idx, int *cnt, int k) {
    if (*cnt == k && !(v > vals[k - 1]))
        return;
    int j = *cnt < k ? (*cnt)++ : k - 1;
    while (j > 0 && vals[j - 1] < v) {
        vals[j] = vals[j - 1];
        idx[j] = idx[j - 1];
        j--;
    }
    vals[j] = v;
    idx[j] = i;
}

static int cmp_ssize(const void *a, const void *b) {
    Py_ssize_t x = *(const Py_ssize_t *)a, y = *(const Py_ssize_t *)b;
    return (x > y) - (x < y);
}

/* top-k of the row from its block maxima; writes k (value, index) pairs, largest first */
static void top_k(const float *x, Py_ssize_t n, const float *bmax, int k, float *vals, Py_ssize_t *idx) {
    Py_ssize_t nb = n / BLOCK;
    float bv[MAX_K];
    Py_ssize_t bi[MAX_K + 1];
    int nbest = 0, cnt = 0;
    for (Py_ssize_t b = 0; b < nb; b++)
        insert_top(bmax[b], b, bv, bi, &nbest, k);
    qsort(bi, (size_t)nbest, sizeof bi[0], cmp_ssize);
    /* the chosen blocks in index order, then the tail, so ties keep the lower index */
    for (int c = 0; c < nbest; c++) {
        const float *p = x + bi[c] * BLOCK;
        for (int j = 0; j < BLOCK; j++)
            insert_top(p[j], bi[c] * BLOCK + j, vals, idx, &cnt, k);
    }
    for (Py_ssize_t i = nb * BLOCK; i < n; i++)
        insert_top(x[i], i, vals, idx, &cnt, k);
}

/* Pass 1's result kept between argmax() and fingerprint() of the same row, in a caller's
 * writable buffer (a bytearray of scratch_size(n) bytes): the row's address and length
 * (fingerprint() refuses a scratch written for another row), its maximum and the block
 * maxima, so the fingerprint does not read the row a third time. */
typedef struct {
    uintptr_t addr;
    int64_t n;
    float m;
    float bmax[];
} scratch_t;

static Py_ssize_t scratch_bytes(Py_ssize_t n) {
    return (Py_ssize_t)sizeof(scratch_t) + (Py_ssize_t)sizeof(float) * (n / BLOCK + 1);
}

/* parse (address, n) and the optional scratch at args[at]; 0 on success */
static int parse_row(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t at, const float **x, Py_ssize_t *n,
                     Py_buffer *scratch) {
    void *addr = PyLong_AsVoidPtr(args[0]);
    if (addr == NULL && PyErr_Occurred())
        return -1;
    *n = PyLong_AsSsize_t(args[1]);
    if (*n == -1 && PyErr_Occurred())
        return -1;
    if (addr == NULL || *n < 1 || *n > PY_SSIZE_T_MAX / 8) {
        PyErr_SetString(PyExc_ValueError, "need a non-null address and n >= 1");
        return -1;
    }
    *x = (const float *)addr;
    scratch->obj = NULL;
    if (nargs > at && args[at] != Py_None) {
        if (PyObject_GetBuffer(args[at], scratch, PyBUF_WRITABLE) < 0)
            return -1;
        if (scratch->len < scratch_bytes(*n) || ((uintptr_t)scratch->buf % _Alignof(scratch_t)) != 0) {
            PyBuffer_Release(scratch);
            scratch->obj = NULL;
            PyErr_SetString(PyExc_ValueError, "scratch must be an aligned writable buffer of scratch_size(n) bytes");
            return -1;
        }
    }
    return 0;
}

/* fingerprint(address, n, k, scratch=None) -> (ids, lps) or None.
 * address: where n >= k contiguous float32 logits lie (a CPU tensor's data_ptr(), which
 * the caller keeps alive and unchanged; ambient_p2p.model.runner checks dtype, device and
 * layout); 1 <= k <= 64; scratch: the buffer argmax() filled for this same row, or None.
 * ids: tuple of k ints (largest logit first; ids[0] is the argmax), lps: tuple of k
 * floats, x[id] - lse in float64. None when a logit is not finite (the caller decides:
 * spec/pol.md rejects it). An address, not a buffer: making a numpy view of the row costs
 * more than the kernel right after a forward pass (cold caches). */
static PyObject *fingerprint(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "fingerprint(address, n, k, scratch=None) takes 3 or 4 arguments");
        return NULL;
    }
    long k = PyLong_AsLong(args[2]);
    if (k == -1 && PyErr_Occurred())
        return NULL;
    const float *x;
    Py_ssize_t n;
    Py_buffer sv;
    if (parse_row(args, nargs, 3, &x, &n, &sv) < 0)
        return NULL;
    if (k < 1 || k > MAX_K || k > n) {
        if (sv.obj != NULL)
            PyBuffer_Release(&sv);
        PyErr_SetString(PyExc_ValueError, "need 1 <= k <= 64 and k <= n");
        return NULL;
    }
    float vals[MAX_K];
    Py_ssize_t idx[MAX_K + 1];
    double s;
    float m;
    /* The GIL is kept: the kernel takes ~20 us for 49,152 logits, and handing the GIL to a
     * waiting thread can cost a whole switch interval (5 ms) before it comes back. */
    if (sv.obj != NULL) {
        scratch_t *st = (scratch_t *)sv.buf;
        if (st->addr != (uintptr_t)x || st->n != (int64_t)n) {
            PyBuffer_Release(&sv);
            PyErr_SetString(PyExc_ValueError, "scratch was filled by argmax() for another row");
            return NULL;
        }
        m = st->m;
        top_k(x, n, st->bmax, (int)k, vals, idx);
        PyBuffer_Release(&sv);
    } else {
        float stack_bmax[1024];
        float *bmax = n / BLOCK < 1024 ? stack_bmax : (float *)malloc(sizeof(float) * (size_t)(n / BLOCK + 1));
        if (bmax == NULL)
            return PyErr_NoMemory();
        m = block_maxima(x, n, bmax);
        top_k(x, n, bmax, (int)k, vals, idx);
        if (bmax != stack_bmax)
            free(bmax);
    }
    s = exp_sum(x, n, m);
    if (!isfinite(m) || !isfinite(s))
        Py_RETURN_NONE;
    double lse = (double)m + log(s);
    PyObject *ids = PyTuple_New(k), *lps = PyTuple_New(k);
    if (ids == NULL || lps == NULL)
        goto fail;
    for (long i = 0; i < k; i++) {
        PyObject *a = PyLong_FromSsize_t(idx[i]);
        if (a == NULL)
            goto fail;
        PyTuple_SET_ITEM(ids, i, a);
        PyObject *b = PyFloat_FromDouble((double)vals[i] - lse);
        if (b == NULL)
            goto fail;
        PyTuple_SET_ITEM(lps, i, b);
    }
    PyObject *res = PyTuple_Pack(2, ids, lps);
    Py_DECREF(ids);
    Py_DECREF(lps);
    return res;
fail:
    Py_XDECREF(ids);
    Py_XDECREF(lps);
    return NULL;
}

/* argmax(address, n, scratch=None) -> int: the index of the first occurrence of the
 * largest of the n float32 logits at address (torch.argmax's answer for finite rows), from
 * pass 1 alone: the greedy token, which a decoder without PoL pays for too (the runner
 * times it apart from the fingerprint). With a scratch (scratch_size(n) bytes), pass 1's
 * result is kept there for fingerprint() of the same row. A NaN is never chosen; a row
 * with one gives no fingerprint. */
static PyObject *argmax(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "argmax(address, n, scratch=None) takes 2 or 3 arguments");
        return NULL;
    }
    const float *x;
    Py_ssize_t n;
    Py_buffer sv;
    if (parse_row(args, nargs, 2, &x, &n, &sv) < 0)
        return NULL;
    float stack_bmax[1024];
    float *bmax = sv.obj != NULL ? ((scratch_t *)sv.buf)->bmax
                  : n / BLOCK < 1024 ? stack_bmax : (float *)malloc(sizeof(float) * (size_t)(n / BLOCK + 1));
    if (bmax == NULL)
        return PyErr_NoMemory();
    float m = block_maxima(x, n, bmax);
    Py_ssize_t nb = n / BLOCK, at = 0;
    Py_ssize_t b = 0;
    while (b < nb && bmax[b] != m)
        b++;
    for (Py_ssize_t i = b * BLOCK; i < n; i++)
        if (x[i] == m) {
            at = i;
            break;
        }
    if (sv.obj != NULL) {
        scratch_t *st = (scratch_t *)sv.buf;
        st->addr = (uintptr_t)x;
        st->n = (int64_t)n;
        st->m = m;
        PyBuffer_Release(&sv);
    } else if (bmax != stack_bmax) {
        free(bmax);
    }
    return PyLong_FromSsize_t(at);
}

/* scratch_size(n) -> int: bytes of the scratch buffer for rows of n logits */
static PyObject *scratch_size(PyObject *self, PyObject *arg) {
    (void)self;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1 || n > PY_SSIZE_T_MAX / 8) {
        PyErr_SetString(PyExc_ValueError, "need n >= 1");
        return NULL;
    }
    return PyLong_FromSsize_t(scratch_bytes(n));
}

static PyMethodDef methods[] = {
    {"argmax", (PyCFunction)(void (*)(void))argmax, METH_FASTCALL,
     "argmax(address, n, scratch=None) -> int: first index of the largest of n float32 logits at address"},
    {"scratch_size", scratch_size, METH_O, "scratch_size(n) -> int: bytes of argmax()/fingerprint()'s scratch for n logits"},
    {"fingerprint", (PyCFunction)(void (*)(void))fingerprint, METH_FASTCALL,
     "fingerprint(address, n, k, scratch=None) -> (ids, lps) | None: top-k ids and float64 log-probs of n float32 logits"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native_pol", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native_pol(void) {
    return PyModule_Create(&module);
}
