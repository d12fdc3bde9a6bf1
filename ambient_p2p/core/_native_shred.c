/* Optional compiled Merkle root of a shred (spec/shred.md "Merkle tree", spec/blockstore.md
 * "Performance"): merkle_root(payload, proof_offset, proof_size, index) is
 *
 *     node = sha256("\x00SOLANA_MERKLE_SHREDS_LEAF" || payload[64:proof_offset])
 *     for each 20-byte proof entry e (level k = 0, 1, ...):
 *         node = sha256("\x01SOLANA_MERKLE_SHREDS_NODE" || (index odd ? e || node[:20] : node[:20] || e))
 *         index >>= 1
 *     return node if index == 0 else None          (None: proof too short for the position)
 *
 * exactly core/shred.py's _merkle_root_of, through OpenSSL's libcrypto low-level SHA-256
 * (SHA-NI/AVX2 assembly picked at runtime; the prefixes are absorbed once into saved
 * contexts). Above level k the rest of that computation is a pure function of
 * (index >> (k + 1), the 40 bytes hashed at level k, the proof entries above k), so when
 * the previous call hashed the same 40 bytes at level k with the same shifted index and
 * the same higher proof entries, its result is this call's result: consecutive shreds of
 * one FEC set (the order a leader sends them) then cost one leaf hash and about one node
 * hash each instead of one per proof entry. Every root is still derived from this shred's
 * own leaf and proof bytes; only identical sub-computations are shared. The one-entry
 * memory is module state guarded by the GIL (never released here).
 *
 * Built by scripts/setup.sh when gcc, the Python headers and libssl-dev are present;
 * ambient_p2p.core.shred falls back to hashlib without it and the roots are identical
 * (tests/test_hot_shred_merkle.py). No I/O. */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <string.h>
#include <openssl/sha.h>

#define SIG_BYTES 64
#define ENTRY_BYTES 20
#define MAX_PROOF 15 /* a nibble of the variant byte */

static const char LEAF_PREFIX[] = "\x00SOLANA_MERKLE_SHREDS_LEAF";
static const char NODE_PREFIX[] = "\x01SOLANA_MERKLE_SHREDS_NODE";
#define PREFIX_BYTES 26

static SHA256_CTX leaf_ctx, node_ctx; /* prefixes absorbed at module init */

/* the previous call: what it hashed at each level and what it returned */
static struct {
    int valid;
    int proof_size;
    unsigned long long index_after[MAX_PROOF]; /* index >> (k + 1) */
    unsigned char pair[MAX_PROOF][2 * ENTRY_BYTES];
    unsigned char proof[MAX_PROOF * ENTRY_BYTES];
    unsigned char root[SHA256_DIGEST_LENGTH];
    int too_short;
} prev;

static PyObject *merkle_root(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "merkle_root(payload, proof_offset, proof_size, index) takes 4 arguments");
        return NULL;
    }
    Py_ssize_t proof_offset = PyLong_AsSsize_t(args[1]);
    if (proof_offset == -1 && PyErr_Occurred())
        return NULL;
    long proof_size = PyLong_AsLong(args[2]);
    if (proof_size == -1 && PyErr_Occurred())
        return NULL;
    unsigned long long index = PyLong_AsUnsignedLongLong(args[3]);
    if (index == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (proof_size < 0 || proof_size > MAX_PROOF) {
        PyErr_SetString(PyExc_ValueError, "proof_size must be 0..15");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (proof_offset < SIG_BYTES || proof_offset + proof_size * ENTRY_BYTES > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "proof_offset/proof_size outside the payload");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)view.buf;
    const unsigned char *proof = p + proof_offset;
    unsigned char node[SHA256_DIGEST_LENGTH];
    SHA256_CTX c = leaf_ctx;
    SHA256_Update(&c, p + SIG_BYTES, (size_t)(proof_offset - SIG_BYTES));
    SHA256_Final(node, &c);
    int k, hit = 0, n = (int)proof_size;
    for (k = 0; k < n; k++) {
        unsigned char *pair = prev.pair[k]; /* written in place: compared first, below */
        unsigned char cur[2 * ENTRY_BYTES];
        const unsigned char *e = proof + k * ENTRY_BYTES;
        if (index & 1) {
            memcpy(cur, e, ENTRY_BYTES);
            memcpy(cur + ENTRY_BYTES, node, ENTRY_BYTES);
        } else {
            memcpy(cur, node, ENTRY_BYTES);
            memcpy(cur + ENTRY_BYTES, e, ENTRY_BYTES);
        }
        index >>= 1;
        if (prev.valid && prev.proof_size == n && prev.index_after[k] == index && memcmp(pair, cur, sizeof cur) == 0
            && memcmp(prev.proof + (k + 1) * ENTRY_BYTES, e + ENTRY_BYTES, (size_t)(n - k - 1) * ENTRY_BYTES) == 0) {
            hit = 1; /* levels above k: the previous call's, unchanged; its result is ours */
            break;
        }
        memcpy(pair, cur, sizeof cur);
        prev.index_after[k] = index;
        c = node_ctx;
        SHA256_Update(&c, cur, sizeof cur);
        SHA256_Final(node, &c);
    }
    if (!hit) {
        /* levels 0..n-1 of prev now hold this call's pairs; finish recording it */
        prev.too_short = index != 0;
        memcpy(prev.root, node, sizeof node);
        prev.proof_size = n;
        prev.valid = 1;
    }
    /* on a hit, levels 0..k-1 were overwritten with this call's pairs and indexes, which
       lead to the same level-k pair; levels >= k and the result are shared */
    memcpy(prev.proof, proof, (size_t)n * ENTRY_BYTES);
    PyBuffer_Release(&view);
    if (prev.too_short)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)prev.root, SHA256_DIGEST_LENGTH);
}

static PyMethodDef methods[] = {
    {"merkle_root", (PyCFunction)(void (*)(void))merkle_root, METH_FASTCALL,
     "merkle_root(payload, proof_offset, proof_size, index) -> bytes | None: the shred's Merkle root "
     "from its leaf payload[64:proof_offset] and proof; None when the proof is too short for index."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native_shred", "Compiled shred Merkle roots (OpenSSL libcrypto).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native_shred(void) {
    SHA256_Init(&leaf_ctx);
    SHA256_Update(&leaf_ctx, LEAF_PREFIX, PREFIX_BYTES);
    SHA256_Init(&node_ctx);
    SHA256_Update(&node_ctx, NODE_PREFIX, PREFIX_BYTES);
    prev.valid = 0;
    return PyModule_Create(&module);
}
