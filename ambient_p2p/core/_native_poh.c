/* Optional compiled PoH hash chain: one C call per tick batch (spec/poh.md, "Performance
 * note"). hash_n(start, n) = n sequential SHA-256 of the 32-byte start, through OpenSSL's
 * libcrypto low-level SHA256_Init/Update/Final (SHA-NI/AVX2 assembly picked at runtime; the
 * one-shot SHA256() and EVP paths go through provider lookups that cost more than the
 * compression for 32-byte inputs). Built by scripts/setup.sh when gcc, the Python headers
 * and libssl-dev are present; ambient_p2p.core.poh falls back to hashlib without it and the
 * digests are identical (tests/test_hot_poh.py, interop/poh vectors). No state, no I/O. */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <string.h>
#include <openssl/sha.h>

/* Below this many hashes the GIL is kept: releasing and taking it back costs more than the
 * hashes (about 60 ns each); above it other threads (the node's event loop) run meanwhile. */
#define RELEASE_GIL_MIN_HASHES 256

static void chain(unsigned char h[SHA256_DIGEST_LENGTH], unsigned long long n) {
    SHA256_CTX c;
    for (unsigned long long i = 0; i < n; i++) {
        SHA256_Init(&c);
        SHA256_Update(&c, h, SHA256_DIGEST_LENGTH);
        SHA256_Final(h, &c);
    }
}

static PyObject *hash_n(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "hash_n(start, n) takes exactly 2 arguments");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len != SHA256_DIGEST_LENGTH) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "start must be 32 bytes");
        return NULL;
    }
    unsigned char h[SHA256_DIGEST_LENGTH];
    memcpy(h, view.buf, SHA256_DIGEST_LENGTH);
    PyBuffer_Release(&view);
    long long n = PyLong_AsLongLong(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        return NULL;
    }
    if (n >= RELEASE_GIL_MIN_HASHES) {
        Py_BEGIN_ALLOW_THREADS
        chain(h, (unsigned long long)n);
        Py_END_ALLOW_THREADS
    } else {
        chain(h, (unsigned long long)n);
    }
    return PyBytes_FromStringAndSize((const char *)h, SHA256_DIGEST_LENGTH);
}

static PyMethodDef methods[] = {
    {"hash_n", (PyCFunction)(void (*)(void))hash_n, METH_FASTCALL,
     "hash_n(start: bytes, n: int) -> bytes: n sequential SHA-256 of the 32-byte start."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native_poh", "Compiled PoH hash chain (OpenSSL libcrypto).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native_poh(void) { return PyModule_Create(&module); }
