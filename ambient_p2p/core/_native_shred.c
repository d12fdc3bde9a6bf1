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


/* ---- parse: core/shred.py parse_shred's accept path in one call ---------------------------
 * parse(packet: bytes, variants: dict[int, ShredVariant], shred_type) -> Shred | None builds
 * exactly the Shred parse_shred builds (same fields, same order in its __dict__) when every
 * check of parse_shred passes, and returns None otherwise: parse_shred then runs its Python
 * path, which raises the refusal with its reason (or accepts, if this code were ever
 * stricter; tests/test_shred_fastpath.py compares both on accepted and refused packets).
 * A variant byte not yet in ``variants`` also returns None (the Python path adds it). */
#define PACKET_DATA_BYTES 1232
#define OFFSET_VARIANT 64
#define DATA_PAYLOAD_BYTES 1203
#define CODE_PAYLOAD_BYTES 1228
#define DATA_HEADERS 88
#define CODE_HEADERS 89
#define MERKLE_ROOT_BYTES 32
#define MAX_DATA_SHREDS_PER_SLOT 32768
#define MAX_CODE_SHREDS_PER_SLOT 32768
#define MAX_NUM_CODING_SHREDS 256
#define MAX_TOTAL_SHARDS 256
#define LAST_SHRED_IN_SLOT 0xC0
#define DATA_COMPLETE_SHRED 0x40

static PyObject *k_payload, *k_variant, *k_signature, *k_slot, *k_index, *k_version, *k_fec, *k_parent_offset,
    *k_flags, *k_size, *k_nd, *k_nc, *k_position;

static inline unsigned long long rd_le(const unsigned char *p, int n) {
    unsigned long long v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int proof_size_for(long total) {
    int bits = 0;
    if (total <= 1)
        return 0;
    for (unsigned long t = (unsigned long)(total - 1); t; t >>= 1)
        bits++;
    return bits;
}

static PyObject *parse(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyDict_Check(args[1]) || !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "parse(packet: bytes, variants: dict, shred_type: type)");
        return NULL;
    }
    PyObject *packet = args[0];
    Py_ssize_t n = PyBytes_GET_SIZE(packet);
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(packet);
    if (n > PACKET_DATA_BYTES || n <= OFFSET_VARIANT)
        Py_RETURN_NONE;
    int vb = p[OFFSET_VARIANT], hi = vb & 0xF0, proof_size = vb & 0x0F, is_data, resigned;
    switch (hi) {
    case 0x60: is_data = 0; resigned = 0; break;
    case 0x70: is_data = 0; resigned = 1; break;
    case 0x90: is_data = 1; resigned = 0; break;
    case 0xB0: is_data = 1; resigned = 1; break;
    default: Py_RETURN_NONE; /* legacy / unchained / unknown: refused by the Python path */
    }
    PyObject *vkey = PyLong_FromLong(vb);
    if (vkey == NULL)
        return NULL;
    PyObject *variant = PyDict_GetItemWithError(args[1], vkey); /* borrowed */
    Py_DECREF(vkey);
    if (variant == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t size_ = is_data ? DATA_PAYLOAD_BYTES : CODE_PAYLOAD_BYTES;
    if (n < size_)
        Py_RETURN_NONE;
    long cap = (long)size_ - (is_data ? DATA_HEADERS : CODE_HEADERS) - MERKLE_ROOT_BYTES - proof_size * ENTRY_BYTES
               - (resigned ? SIG_BYTES : 0);
    if (cap < 0)
        Py_RETURN_NONE;
    unsigned long long slot = rd_le(p + 65, 8);
    unsigned long index = (unsigned long)rd_le(p + 73, 4);
    unsigned long version = (unsigned long)rd_le(p + 77, 2);
    unsigned long fec = (unsigned long)rd_le(p + 79, 4);
    unsigned long a = (unsigned long)rd_le(p + 83, 2);
    unsigned long b, c;
    if (is_data) {
        b = p[85];
        c = (unsigned long)rd_le(p + 86, 2);
        unsigned long parent_offset = a, flags = b, size = c;
        if (index >= MAX_DATA_SHREDS_PER_SLOT)
            Py_RETURN_NONE;
        if ((flags & LAST_SHRED_IN_SLOT) && !(flags & DATA_COMPLETE_SHRED))
            Py_RETURN_NONE;
        if (size < DATA_HEADERS || size > (unsigned long)(DATA_HEADERS + cap))
            Py_RETURN_NONE;
        if ((unsigned long long)parent_offset > slot || (parent_offset == 0 && slot != 0))
            Py_RETURN_NONE;
        if (index < fec)
            Py_RETURN_NONE;
        if (index - fec >= (1UL << proof_size))
            Py_RETURN_NONE;
    } else {
        b = (unsigned long)rd_le(p + 85, 2);
        c = (unsigned long)rd_le(p + 87, 2);
        unsigned long nd = a, nc = b, pos = c;
        if (index >= (MAX_DATA_SHREDS_PER_SLOT > MAX_CODE_SHREDS_PER_SLOT ? MAX_DATA_SHREDS_PER_SLOT
                                                                           : MAX_CODE_SHREDS_PER_SLOT))
            Py_RETURN_NONE;
        if (nc > MAX_NUM_CODING_SHREDS || nd == 0 || nc == 0 || pos >= nc || index < pos)
            Py_RETURN_NONE;
        if (fec + nd - 1 >= MAX_DATA_SHREDS_PER_SLOT)
            Py_RETURN_NONE;
        if (index - pos + nc - 1 >= MAX_CODE_SHREDS_PER_SLOT)
            Py_RETURN_NONE;
        if (nd + nc > MAX_TOTAL_SHARDS)
            Py_RETURN_NONE;
        if (proof_size != proof_size_for((long)(nd + nc)))
            Py_RETURN_NONE;
    }
    PyObject *payload;
    if (n == size_) {
        Py_INCREF(packet);
        payload = packet;
    } else {
        payload = PyBytes_FromStringAndSize((const char *)p, size_);
        if (payload == NULL)
            return NULL;
    }
    PyObject *d = PyDict_New();
    PyObject *sig = PyBytes_FromStringAndSize((const char *)p, SIG_BYTES);
    PyObject *v_slot = PyLong_FromUnsignedLongLong(slot), *v_index = PyLong_FromUnsignedLong(index),
             *v_version = PyLong_FromUnsignedLong(version), *v_fec = PyLong_FromUnsignedLong(fec),
             *v_a = PyLong_FromUnsignedLong(a), *v_b = PyLong_FromUnsignedLong(b), *v_c = PyLong_FromUnsignedLong(c);
    PyObject *obj = NULL;
    if (d && sig && v_slot && v_index && v_version && v_fec && v_a && v_b && v_c
        && PyDict_SetItem(d, k_payload, payload) == 0 && PyDict_SetItem(d, k_variant, variant) == 0
        && PyDict_SetItem(d, k_signature, sig) == 0 && PyDict_SetItem(d, k_slot, v_slot) == 0
        && PyDict_SetItem(d, k_index, v_index) == 0 && PyDict_SetItem(d, k_version, v_version) == 0
        && PyDict_SetItem(d, k_fec, v_fec) == 0
        && PyDict_SetItem(d, k_parent_offset, is_data ? v_a : Py_None) == 0
        && PyDict_SetItem(d, k_flags, is_data ? v_b : Py_None) == 0
        && PyDict_SetItem(d, k_size, is_data ? v_c : Py_None) == 0
        && PyDict_SetItem(d, k_nd, is_data ? Py_None : v_a) == 0
        && PyDict_SetItem(d, k_nc, is_data ? Py_None : v_b) == 0
        && PyDict_SetItem(d, k_position, is_data ? Py_None : v_c) == 0) {
        PyTypeObject *tp = (PyTypeObject *)args[2];
        obj = tp->tp_alloc(tp, 0);
        if (obj != NULL && PyObject_GenericSetDict(obj, d, NULL) < 0)
            Py_CLEAR(obj);
    }
    Py_XDECREF(d);
    Py_XDECREF(sig);
    Py_XDECREF(v_slot);
    Py_XDECREF(v_index);
    Py_XDECREF(v_version);
    Py_XDECREF(v_fec);
    Py_XDECREF(v_a);
    Py_XDECREF(v_b);
    Py_XDECREF(v_c);
    Py_DECREF(payload);
    return obj;
}

static PyMethodDef methods[] = {
    {"merkle_root", (PyCFunction)(void (*)(void))merkle_root, METH_FASTCALL,
     "merkle_root(payload, proof_offset, proof_size, index) -> bytes | None: the shred's Merkle root "
     "from its leaf payload[64:proof_offset] and proof; None when the proof is too short for index."},
    {"parse", (PyCFunction)(void (*)(void))parse, METH_FASTCALL,
     "parse(packet: bytes, variants: dict, shred_type: type) -> Shred | None: parse_shred's accept path; "
     "None when the Python path must decide."},
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
    struct { PyObject **k; const char *s; } keys[] = {
        {&k_payload, "payload"}, {&k_variant, "variant"}, {&k_signature, "signature"}, {&k_slot, "slot"},
        {&k_index, "index"}, {&k_version, "version"}, {&k_fec, "fec_set_index"}, {&k_parent_offset, "parent_offset"},
        {&k_flags, "flags"}, {&k_size, "size"}, {&k_nd, "num_data_shreds"}, {&k_nc, "num_coding_shreds"},
        {&k_position, "position"},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if ((*keys[i].k = PyUnicode_InternFromString(keys[i].s)) == NULL)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* the constants the checks above hard-code: core/shred.py compares them with its own
       at import and falls back to Python on any difference */
    struct { const char *name; long value; } cs[] = {
        {"PACKET_DATA_BYTES", PACKET_DATA_BYTES}, {"OFFSET_VARIANT", OFFSET_VARIANT}, {"OFFSET_SLOT", 65},
        {"OFFSET_INDEX", 73}, {"OFFSET_VERSION", 77}, {"OFFSET_FEC_SET_INDEX", 79}, {"OFFSET_PARENT_OFFSET", 83},
        {"OFFSET_FLAGS", 85}, {"OFFSET_SIZE", 86}, {"OFFSET_NUM_DATA", 83}, {"OFFSET_NUM_CODING", 85},
        {"OFFSET_POSITION", 87}, {"SIZE_OF_SIGNATURE", SIG_BYTES}, {"SIZE_OF_MERKLE_PROOF_ENTRY", ENTRY_BYTES},
        {"MAX_PROOF_SIZE", MAX_PROOF}, {"DATA_PAYLOAD_BYTES", DATA_PAYLOAD_BYTES},
        {"CODE_PAYLOAD_BYTES", CODE_PAYLOAD_BYTES}, {"SIZE_OF_DATA_SHRED_HEADERS", DATA_HEADERS},
        {"SIZE_OF_CODING_SHRED_HEADERS", CODE_HEADERS}, {"SIZE_OF_MERKLE_ROOT", MERKLE_ROOT_BYTES},
        {"MAX_DATA_SHREDS_PER_SLOT", MAX_DATA_SHREDS_PER_SLOT}, {"MAX_CODE_SHREDS_PER_SLOT", MAX_CODE_SHREDS_PER_SLOT},
        {"MAX_NUM_CODING_SHREDS", MAX_NUM_CODING_SHREDS}, {"MAX_TOTAL_SHARDS", MAX_TOTAL_SHARDS},
        {"LAST_SHRED_IN_SLOT", LAST_SHRED_IN_SLOT}, {"DATA_COMPLETE_SHRED", DATA_COMPLETE_SHRED},
        {"VARIANT_MERKLE_CODE_CHAINED", 0x60}, {"VARIANT_MERKLE_CODE_CHAINED_RESIGNED", 0x70},
        {"VARIANT_MERKLE_DATA_CHAINED", 0x90}, {"VARIANT_MERKLE_DATA_CHAINED_RESIGNED", 0xB0},
    };
    PyObject *consts = PyDict_New();
    if (consts == NULL || PyModule_AddObject(m, "CONSTANTS", consts) < 0) {
        Py_XDECREF(consts);
        Py_DECREF(m);
        return NULL;
    }
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        PyObject *v = PyLong_FromLong(cs[i].value);
        if (v == NULL || PyDict_SetItemString(consts, cs[i].name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(m);
            return NULL;
        }
        Py_DECREF(v);
    }
    return m;
}
