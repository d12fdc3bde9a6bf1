/* Optional compiled GF(2^8) kernel for core/erasure.py: Intel ISA-L's ec_init_tables +
 * ec_encode_data (SIMD, runtime-dispatched) and gf_invert_matrix, driven with the coefficient
 * matrices that core/erasure.py builds from the reed-solomon-erasure crate's encoding matrix
 * (spec/shred.md, "Speed and the choice of library"). ISA-L's field is GF(2^8) mod 0x11D like
 * the crate's, and ec_encode_data computes any given matrix times the shards, so the parity and
 * the recovered shards are byte-identical to the numpy path (tests/test_hot_erasure.py).
 * Built by scripts/setup.sh when libisal-dev is present; erasure.py falls back to numpy
 * without it. No state, no I/O. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <string.h>
#include <isa-l/erasure_code.h>

#define MAX_SHARDS 256

/* init_tables(k, rows, matrix) -> bytes: ISA-L's expanded tables (32 * k * rows bytes) for the
 * rows x k coefficient matrix given row-major. */
static PyObject *init_tables(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "init_tables(k, rows, matrix) takes exactly 3 arguments");
        return NULL;
    }
    long k = PyLong_AsLong(args[0]);
    long rows = PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (k < 1 || k > MAX_SHARDS || rows < 1 || rows > MAX_SHARDS) {
        PyErr_SetString(PyExc_ValueError, "k and rows must be in 1..256");
        return NULL;
    }
    Py_buffer m;
    if (PyObject_GetBuffer(args[2], &m, PyBUF_SIMPLE) < 0)
        return NULL;
    if (m.len != k * rows) {
        PyBuffer_Release(&m);
        PyErr_SetString(PyExc_ValueError, "matrix must hold rows * k bytes");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, 32 * k * rows);
    if (out != NULL)
        ec_init_tables((int)k, (int)rows, (unsigned char *)m.buf, (unsigned char *)PyBytes_AS_STRING(out));
    PyBuffer_Release(&m);
    return out;
}

/* encode(tables, k, rows, shards) -> list[bytes]: the rows output shards of the coefficient
 * matrix behind ``tables`` times the k input shards. ``shards`` is a list or tuple of k
 * equally long non-empty bytes-like objects, or one contiguous buffer of k * L bytes. */
static PyObject *encode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "encode(tables, k, rows, shards) takes exactly 4 arguments");
        return NULL;
    }
    long k = PyLong_AsLong(args[1]);
    long rows = PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (k < 1 || k > MAX_SHARDS || rows < 1 || rows > MAX_SHARDS) {
        PyErr_SetString(PyExc_ValueError, "k and rows must be in 1..256");
        return NULL;
    }
    PyObject *result = NULL;
    Py_buffer tbl;
    Py_buffer views[MAX_SHARDS];
    Py_ssize_t nviews = 0;
    Py_buffer whole;
    int have_whole = 0;
    unsigned char *src[MAX_SHARDS];
    unsigned char *dst[MAX_SHARDS];
    Py_ssize_t len = -1;
    if (PyObject_GetBuffer(args[0], &tbl, PyBUF_SIMPLE) < 0)
        return NULL;
    if (tbl.len != 32 * k * rows) {
        PyErr_SetString(PyExc_ValueError, "tables do not match k and rows");
        goto done;
    }
    PyObject *shards = args[3];
    if (PyList_Check(shards) || PyTuple_Check(shards)) {
        if (PySequence_Fast_GET_SIZE(shards) != k) {
            PyErr_SetString(PyExc_ValueError, "expected k shards");
            goto done;
        }
        PyObject **items = PySequence_Fast_ITEMS(shards);
        for (Py_ssize_t i = 0; i < k; i++) {
            if (PyObject_GetBuffer(items[i], &views[i], PyBUF_SIMPLE) < 0)
                goto done;
            nviews++;
            if (len < 0)
                len = views[i].len;
            if (views[i].len != len) {
                PyErr_SetString(PyExc_ValueError, "shards differ in length");
                goto done;
            }
            src[i] = (unsigned char *)views[i].buf;
        }
    } else {
        if (PyObject_GetBuffer(shards, &whole, PyBUF_C_CONTIGUOUS) < 0)
            goto done;
        have_whole = 1;
        if (whole.len % k != 0) {
            PyErr_SetString(PyExc_ValueError, "buffer length is not a multiple of k");
            goto done;
        }
        len = whole.len / k;
        for (Py_ssize_t i = 0; i < k; i++)
            src[i] = (unsigned char *)whole.buf + i * len;
    }
    if (len < 1 || len > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "shards must be non-empty and shorter than 2 GiB");
        goto done;
    }
    PyObject *list = PyList_New(rows);
    if (list == NULL)
        goto done;
    for (Py_ssize_t r = 0; r < rows; r++) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, len);
        if (b == NULL) {
            Py_DECREF(list);
            goto done;
        }
        dst[r] = (unsigned char *)PyBytes_AS_STRING(b);
        PyList_SET_ITEM(list, r, b);
    }
    ec_encode_data((int)len, (int)k, (int)rows, (unsigned char *)tbl.buf, src, dst);
    result = list;
done:
    for (Py_ssize_t i = 0; i < nviews; i++)
        PyBuffer_Release(&views[i]);
    if (have_whole)
        PyBuffer_Release(&whole);
    PyBuffer_Release(&tbl);
    return result;
}

/* invert(matrix, n) -> bytes | None: the inverse of the n x n matrix (row-major) over
 * GF(2^8) mod 0x11D, or None when it is singular. */
static PyObject *invert(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "invert(matrix, n) takes exactly 2 arguments");
        return NULL;
    }
    long n = PyLong_AsLong(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1 || n > MAX_SHARDS) {
        PyErr_SetString(PyExc_ValueError, "n must be in 1..256");
        return NULL;
    }
    Py_buffer m;
    if (PyObject_GetBuffer(args[0], &m, PyBUF_SIMPLE) < 0)
        return NULL;
    if (m.len != n * n) {
        PyBuffer_Release(&m);
        PyErr_SetString(PyExc_ValueError, "matrix must hold n * n bytes");
        return NULL;
    }
    unsigned char *work = PyMem_Malloc((size_t)(n * n));
    if (work == NULL) {
        PyBuffer_Release(&m);
        return PyErr_NoMemory();
    }
    memcpy(work, m.buf, (size_t)(n * n)); /* gf_invert_matrix destroys its input */
    PyBuffer_Release(&m);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * n);
    if (out != NULL && gf_invert_matrix(work, (unsigned char *)PyBytes_AS_STRING(out), (int)n) != 0) {
        Py_DECREF(out);
        out = Py_NewRef(Py_None);
    }
    PyMem_Free(work);
    return out;
}

static PyMethodDef methods[] = {
    {"init_tables", (PyCFunction)(void (*)(void))init_tables, METH_FASTCALL,
     "init_tables(k, rows, matrix) -> bytes: ISA-L tables for a rows x k coefficient matrix."},
    {"encode", (PyCFunction)(void (*)(void))encode, METH_FASTCALL,
     "encode(tables, k, rows, shards) -> list[bytes]: the coefficient matrix times the k shards."},
    {"invert", (PyCFunction)(void (*)(void))invert, METH_FASTCALL,
     "invert(matrix, n) -> bytes | None: inverse of an n x n GF(2^8) matrix, None if singular."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native_ec", "ISA-L GF(2^8) erasure kernels for core/erasure.py.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native_ec(void) { return PyModule_Create(&module); }
