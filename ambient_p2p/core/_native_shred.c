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

/* The root of one shred into out (1), or 0 when the proof is too short for index. The caller
 * checked proof_offset + proof_size * 20 <= the payload's length and proof_offset >= 64. */
static int root_of(const unsigned char *p, Py_ssize_t proof_offset, int n, unsigned long long index,
                   unsigned char out[SHA256_DIGEST_LENGTH]) {
    const unsigned char *proof = p + proof_offset;
    unsigned char node[SHA256_DIGEST_LENGTH];
    SHA256_CTX c = leaf_ctx;
    SHA256_Update(&c, p + SIG_BYTES, (size_t)(proof_offset - SIG_BYTES));
    SHA256_Final(node, &c);
    int k, hit = 0;
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
    if (prev.too_short)
        return 0;
    memcpy(out, prev.root, SHA256_DIGEST_LENGTH);
    return 1;
}

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
    unsigned char root[SHA256_DIGEST_LENGTH];
    int ok = root_of((const unsigned char *)view.buf, proof_offset, (int)proof_size, index, root);
    PyBuffer_Release(&view);
    if (!ok)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)root, SHA256_DIGEST_LENGTH);
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

/* The header fields of one packet when every check of parse_shred passes (1), else 0. */
struct hdr {
    int vb, is_data, resigned, proof_size;
    Py_ssize_t size_;   /* payload bytes */
    long cap;           /* data buffer / shard room */
    unsigned long long slot;
    unsigned long index, version, fec, a, b, c; /* a, b, c: parent_offset, flags, size or nd, nc, position */
};

static int hdr_check(const unsigned char *p, Py_ssize_t n, struct hdr *h) {
    if (n > PACKET_DATA_BYTES || n <= OFFSET_VARIANT)
        return 0;
    int vb = p[OFFSET_VARIANT], hi = vb & 0xF0, proof_size = vb & 0x0F, is_data, resigned;
    switch (hi) {
    case 0x60: is_data = 0; resigned = 0; break;
    case 0x70: is_data = 0; resigned = 1; break;
    case 0x90: is_data = 1; resigned = 0; break;
    case 0xB0: is_data = 1; resigned = 1; break;
    default: return 0; /* legacy / unchained / unknown: refused by the Python path */
    }
    Py_ssize_t size_ = is_data ? DATA_PAYLOAD_BYTES : CODE_PAYLOAD_BYTES;
    if (n < size_)
        return 0;
    long cap = (long)size_ - (is_data ? DATA_HEADERS : CODE_HEADERS) - MERKLE_ROOT_BYTES - proof_size * ENTRY_BYTES
               - (resigned ? SIG_BYTES : 0);
    if (cap < 0)
        return 0;
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
            return 0;
        if ((flags & LAST_SHRED_IN_SLOT) && !(flags & DATA_COMPLETE_SHRED))
            return 0;
        if (size < DATA_HEADERS || size > (unsigned long)(DATA_HEADERS + cap))
            return 0;
        if ((unsigned long long)parent_offset > slot || (parent_offset == 0 && slot != 0))
            return 0;
        if (index < fec)
            return 0;
        if (index - fec >= (1UL << proof_size))
            return 0;
    } else {
        b = (unsigned long)rd_le(p + 85, 2);
        c = (unsigned long)rd_le(p + 87, 2);
        unsigned long nd = a, nc = b, pos = c;
        if (index >= (MAX_DATA_SHREDS_PER_SLOT > MAX_CODE_SHREDS_PER_SLOT ? MAX_DATA_SHREDS_PER_SLOT
                                                                           : MAX_CODE_SHREDS_PER_SLOT))
            return 0;
        if (nc > MAX_NUM_CODING_SHREDS || nd == 0 || nc == 0 || pos >= nc || index < pos)
            return 0;
        if (fec + nd - 1 >= MAX_DATA_SHREDS_PER_SLOT)
            return 0;
        if (index - pos + nc - 1 >= MAX_CODE_SHREDS_PER_SLOT)
            return 0;
        if (nd + nc > MAX_TOTAL_SHARDS)
            return 0;
        if (proof_size != proof_size_for((long)(nd + nc)))
            return 0;
    }
    h->vb = vb;
    h->is_data = is_data;
    h->resigned = resigned;
    h->proof_size = proof_size;
    h->size_ = size_;
    h->cap = cap;
    h->slot = slot;
    h->index = index;
    h->version = version;
    h->fec = fec;
    h->a = a;
    h->b = b;
    h->c = c;
    return 1;
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
    struct hdr h;
    if (!hdr_check(p, n, &h))
        Py_RETURN_NONE;
    PyObject *vkey = PyLong_FromLong(h.vb);
    if (vkey == NULL)
        return NULL;
    PyObject *variant = PyDict_GetItemWithError(args[1], vkey); /* borrowed */
    Py_DECREF(vkey);
    if (variant == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    int is_data = h.is_data;
    Py_ssize_t size_ = h.size_;
    unsigned long long slot = h.slot;
    unsigned long index = h.index, version = h.version, fec = h.fec, a = h.a, b = h.b, c = h.c;
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


/* ---- scan: the common case of one blockstore insert in one call ----------------------------
 * scan(packets: list[bytes] | tuple[bytes, ...]) -> tuple | None. For a batch in which every
 * packet passes parse's checks and the batch is "simple", returns
 *
 *     (cks, payloads, data_keys, code_keys, slots)
 *
 * cks[i] = ("data_shred" | "code_shred", key) and payloads[i] the payload to store for packet
 * i (the packet truncated to the payload, its retransmitter signature zeroed), keys big-endian
 * slot u64 || index u32; data_keys / code_keys the keys of each kind in packet order; and one
 * tuple per slot, in the order of its first packet:
 *
 *     (slot, parent_offset | None, first_data_pos, last_data_pos, last_in_slot_index | None,
 *      max_data_index, data_indexes, code_indexes, data_complete_indexes, sets)
 *
 * (positions -1 and max_data_index -1 when the slot has no data shred), with one tuple per
 * FEC set of the slot, in the order of its first packet:
 *
 *     (fec_set_index, merkle_root, signature, first_index, first_is_data,
 *      num_data | None, num_coding | None, first_coding_index | None)
 *
 * (first_*: the set's first packet; the erasure fields from its coding shreds, None if it has
 * none). "Simple" (ledger/blockstore.py insert_shreds' fast path relies on each): no slot 0;
 * no two packets with the same (kind, slot, index); within a slot, every data shred names one
 * parent offset and at most one is LAST_IN_SLOT, with no data index above it; within a FEC
 * set, one Merkle root, one signature and one erasure configuration. None otherwise, or when
 * any packet is not bytes or fails a check: the per-shred Python path then decides.
 * One pass over the packets: slots and FEC sets are found by a linear search that starts at
 * the previous packet's (consecutive packets usually share both), and repeated keys by an
 * open-addressing set. A batch of more than MAX_SCAN_SETS FEC sets goes to the per-shred
 * path (the searches stay linear in the batch size). */
#define MAX_SCAN_SETS 256

struct slotrec {
    unsigned long long slot;
    Py_ssize_t first_data, last_data;
    long parent_offset, n_last, last_index, max_data;
    PyObject *data_idx, *code_idx, *complete, *sets; /* owned lists */
};

struct setrec {
    unsigned long long slot;
    unsigned long fec, first_index, nd, nc, first_coding;
    int first_is_data, have_code;
    Py_ssize_t slot_rec;
    const unsigned char *sig; /* inside its first packet (alive for the call) */
    unsigned char root[SHA256_DIGEST_LENGTH];
};

struct keyrec { /* open-addressing set of (kind, slot, index) */
    unsigned long long slot;
    unsigned long index;
    int used, is_data;
};

static PyObject *k_data_cf, *k_code_cf;

static PyObject *key_bytes(unsigned long long slot, unsigned long index) {
    unsigned char k[12];
    for (int i = 0; i < 8; i++)
        k[i] = (unsigned char)(slot >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        k[8 + i] = (unsigned char)(index >> (24 - 8 * i));
    return PyBytes_FromStringAndSize((const char *)k, 12);
}

/* list.append that steals the reference; -1 on error */
static int append_steal(PyObject *list, PyObject *item) {
    if (item == NULL)
        return -1;
    int r = PyList_Append(list, item);
    Py_DECREF(item);
    return r;
}

static PyObject *ulong_or_none(int present, unsigned long long v) {
    if (!present)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *scan(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyList_CheckExact(arg) && !PyTuple_CheckExact(arg))
        Py_RETURN_NONE;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(arg);
    PyObject **items = PySequence_Fast_ITEMS(arg);
    if (n == 0)
        Py_RETURN_NONE;
    size_t tsize = 16;
    while (tsize < 2 * (size_t)n)
        tsize <<= 1;
    struct slotrec *slots_ = PyMem_Calloc((size_t)n, sizeof *slots_);
    struct setrec *sets_ = PyMem_Calloc((size_t)n, sizeof *sets_);
    struct keyrec *keys_ = PyMem_Calloc(tsize, sizeof *keys_);
    Py_ssize_t nslots = 0, nsets = 0, cur_slot = -1, cur_set = -1;
    PyObject *cks = NULL, *payloads = NULL, *dkeys = NULL, *ckeys = NULL, *slots = NULL, *out = NULL;
    if (slots_ == NULL || sets_ == NULL || keys_ == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    cks = PyList_New(n);
    payloads = PyList_New(n);
    dkeys = PyList_New(0);
    ckeys = PyList_New(0);
    slots = PyList_New(0);
    if (!cks || !payloads || !dkeys || !ckeys || !slots)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pkt = items[i];
        if (!PyBytes_CheckExact(pkt))
            goto not_simple;
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(pkt);
        struct hdr h;
        if (!hdr_check(p, PyBytes_GET_SIZE(pkt), &h) || h.slot == 0)
            goto not_simple;
        /* no two packets with the same (kind, slot, index) */
        unsigned long long hh = (h.slot * 0x9E3779B97F4A7C15ULL) ^ ((unsigned long long)h.index * 0xC2B2AE3D27D4EB4FULL)
                                ^ (unsigned long long)h.is_data;
        hh ^= hh >> 29;
        size_t slot_i = (size_t)hh & (tsize - 1);
        while (keys_[slot_i].used) {
            if (keys_[slot_i].slot == h.slot && keys_[slot_i].index == h.index && keys_[slot_i].is_data == h.is_data)
                goto not_simple;
            slot_i = (slot_i + 1) & (tsize - 1);
        }
        keys_[slot_i].used = 1;
        keys_[slot_i].slot = h.slot;
        keys_[slot_i].index = h.index;
        keys_[slot_i].is_data = h.is_data;
        Py_ssize_t proof_offset = (h.is_data ? DATA_HEADERS : CODE_HEADERS) + h.cap + MERKLE_ROOT_BYTES;
        unsigned long long shard_index = h.is_data ? h.index - h.fec : h.a + h.c;
        unsigned char root[SHA256_DIGEST_LENGTH];
        if (!root_of(p, proof_offset, h.proof_size, shard_index, root))
            goto not_simple;
        /* its slot and FEC set (usually the previous packet's) */
        if (cur_slot < 0 || slots_[cur_slot].slot != h.slot) {
            for (cur_slot = 0; cur_slot < nslots && slots_[cur_slot].slot != h.slot; cur_slot++)
                ;
            if (cur_slot == nslots) {
                struct slotrec *r = &slots_[nslots++];
                r->slot = h.slot;
                r->first_data = r->last_data = -1;
                r->parent_offset = r->last_index = r->max_data = -1;
                if ((r->data_idx = PyList_New(0)) == NULL || (r->code_idx = PyList_New(0)) == NULL
                    || (r->complete = PyList_New(0)) == NULL || (r->sets = PyList_New(0)) == NULL)
                    goto fail;
            }
        }
        struct slotrec *sr = &slots_[cur_slot];
        if (cur_set < 0 || sets_[cur_set].slot != h.slot || sets_[cur_set].fec != h.fec) {
            for (cur_set = 0; cur_set < nsets && !(sets_[cur_set].slot == h.slot && sets_[cur_set].fec == h.fec);
                 cur_set++)
                ;
            if (cur_set == nsets) {
                if (nsets == MAX_SCAN_SETS)
                    goto not_simple; /* keeps the searches linear in the batch */
                struct setrec *t = &sets_[nsets++];
                t->slot = h.slot;
                t->fec = h.fec;
                t->first_index = h.index;
                t->first_is_data = h.is_data;
                t->slot_rec = cur_slot;
                t->sig = p;
                memcpy(t->root, root, sizeof root);
            }
        }
        struct setrec *t = &sets_[cur_set];
        if (memcmp(t->root, root, sizeof root) != 0 || memcmp(t->sig, p, SIG_BYTES) != 0)
            goto not_simple; /* one root and one signature per FEC set */
        if (h.is_data) {
            if (sr->parent_offset >= 0 && (unsigned long)sr->parent_offset != h.a)
                goto not_simple;
            sr->parent_offset = (long)h.a;
            if (sr->first_data < 0)
                sr->first_data = i;
            sr->last_data = i;
            if ((long)h.index > sr->max_data)
                sr->max_data = (long)h.index;
            if ((h.b & LAST_SHRED_IN_SLOT) == LAST_SHRED_IN_SLOT) {
                sr->n_last++;
                sr->last_index = (long)h.index;
            }
            if (append_steal(sr->data_idx, PyLong_FromUnsignedLong(h.index)) < 0)
                goto fail;
            if ((h.b & DATA_COMPLETE_SHRED) && append_steal(sr->complete, PyLong_FromUnsignedLong(h.index)) < 0)
                goto fail;
        } else {
            unsigned long fc = h.index - h.c;
            if (t->have_code && (h.a != t->nd || h.b != t->nc || fc != t->first_coding))
                goto not_simple; /* one erasure configuration per FEC set */
            t->have_code = 1;
            t->nd = h.a;
            t->nc = h.b;
            t->first_coding = fc;
            if (append_steal(sr->code_idx, PyLong_FromUnsignedLong(h.index)) < 0)
                goto fail;
        }
        /* the payload stored: truncated to the payload size, retransmitter signature zeroed */
        PyObject *payload;
        Py_ssize_t rs = proof_offset + (Py_ssize_t)h.proof_size * ENTRY_BYTES;
        int zero = 1;
        if (h.resigned)
            for (int k = 0; k < SIG_BYTES; k++)
                if (p[rs + k]) {
                    zero = 0;
                    break;
                }
        if (zero && PyBytes_GET_SIZE(pkt) == h.size_) {
            Py_INCREF(pkt);
            payload = pkt;
        } else {
            payload = PyBytes_FromStringAndSize((const char *)p, h.size_);
            if (payload == NULL)
                goto fail;
            if (!zero)
                memset(PyBytes_AS_STRING(payload) + rs, 0, SIG_BYTES);
        }
        PyList_SET_ITEM(payloads, i, payload);
        PyObject *key = key_bytes(h.slot, h.index);
        if (key == NULL)
            goto fail;
        if (PyList_Append(h.is_data ? dkeys : ckeys, key) < 0) {
            Py_DECREF(key);
            goto fail;
        }
        PyObject *ck = PyTuple_New(2);
        if (ck == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        PyObject *cf = h.is_data ? k_data_cf : k_code_cf;
        Py_INCREF(cf);
        PyTuple_SET_ITEM(ck, 0, cf);
        PyTuple_SET_ITEM(ck, 1, key); /* steals */
        PyList_SET_ITEM(cks, i, ck);
    }
    for (Py_ssize_t r = 0; r < nslots; r++)
        if (slots_[r].n_last > 1 || (slots_[r].n_last == 1 && slots_[r].max_data > slots_[r].last_index))
            goto not_simple; /* two LAST_IN_SLOT shreds, or a data shred past one */
    for (Py_ssize_t k = 0; k < nsets; k++) {
        struct setrec *t = &sets_[k];
        PyObject *set = Py_BuildValue("(ky#y#kONNN)", t->fec, (const char *)t->root, (Py_ssize_t)SHA256_DIGEST_LENGTH,
                                      (const char *)t->sig, (Py_ssize_t)SIG_BYTES, t->first_index,
                                      t->first_is_data ? Py_True : Py_False, ulong_or_none(t->have_code, t->nd),
                                      ulong_or_none(t->have_code, t->nc), ulong_or_none(t->have_code, t->first_coding));
        if (append_steal(slots_[t->slot_rec].sets, set) < 0)
            goto fail;
    }
    for (Py_ssize_t r = 0; r < nslots; r++) {
        struct slotrec *sr = &slots_[r];
        PyObject *st = Py_BuildValue("(KNnnNlOOOO)", sr->slot,
                                     ulong_or_none(sr->parent_offset >= 0, (unsigned long long)sr->parent_offset),
                                     sr->first_data, sr->last_data,
                                     ulong_or_none(sr->n_last == 1, (unsigned long long)sr->last_index), sr->max_data,
                                     sr->data_idx, sr->code_idx, sr->complete, sr->sets);
        if (append_steal(slots, st) < 0)
            goto fail;
    }
    out = PyTuple_Pack(5, cks, payloads, dkeys, ckeys, slots);
    goto fail; /* out set (or NULL with the error): release the rest */
not_simple:
    Py_INCREF(Py_None);
    out = Py_None;
fail:
    if (slots_ != NULL)
        for (Py_ssize_t r = 0; r < nslots; r++) {
            Py_XDECREF(slots_[r].data_idx);
            Py_XDECREF(slots_[r].code_idx);
            Py_XDECREF(slots_[r].complete);
            Py_XDECREF(slots_[r].sets);
        }
    PyMem_Free(slots_);
    PyMem_Free(sets_);
    PyMem_Free(keys_);
    Py_XDECREF(cks);
    Py_XDECREF(payloads);
    Py_XDECREF(dkeys);
    Py_XDECREF(ckeys);
    Py_XDECREF(slots);
    return out;
}

/* ---- uint_array: a blockstore meta's list of indexes as CBOR -------------------------------
 * uint_array(v: tuple, bits, max_items) -> bytes | None: the CBOR array of the unsigned ints
 * in v, every head in shortest form (what cbor2 writes, canonical or not); None unless v is
 * a tuple of at most max_items exact ints in [0, 2**bits) (ledger/meta.py then takes the
 * generic path, which raises as codec always has). */
static unsigned char *put_head(unsigned char *o, int major, unsigned long long n) {
    unsigned char b = (unsigned char)(major << 5);
    if (n < 24) {
        *o++ = b | (unsigned char)n;
    } else if (n < 0x100) {
        *o++ = b | 24;
        *o++ = (unsigned char)n;
    } else if (n < 0x10000) {
        *o++ = b | 25;
        for (int i = 1; i >= 0; i--)
            *o++ = (unsigned char)(n >> (8 * i));
    } else if (n < 0x100000000ULL) {
        *o++ = b | 26;
        for (int i = 3; i >= 0; i--)
            *o++ = (unsigned char)(n >> (8 * i));
    } else {
        *o++ = b | 27;
        for (int i = 7; i >= 0; i--)
            *o++ = (unsigned char)(n >> (8 * i));
    }
    return o;
}

static PyObject *uint_array(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "uint_array(v: tuple, bits: int, max_items: int)");
        return NULL;
    }
    long bits = PyLong_AsLong(args[1]);
    Py_ssize_t max_items = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (bits < 1 || bits > 64) {
        PyErr_SetString(PyExc_ValueError, "bits must be 1..64");
        return NULL;
    }
    PyObject *v = args[0];
    if (!PyTuple_CheckExact(v) || PyTuple_GET_SIZE(v) > max_items)
        Py_RETURN_NONE;
    Py_ssize_t n = PyTuple_GET_SIZE(v);
    unsigned char stack[1024], *buf = stack;
    size_t cap = 9 + (size_t)n * 9;
    if (cap > sizeof stack && (buf = PyMem_Malloc(cap)) == NULL)
        return PyErr_NoMemory();
    unsigned char *o = put_head(buf, 4, (unsigned long long)n);
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyTuple_GET_ITEM(v, i);
        if (!PyLong_CheckExact(x))
            goto none;
        int overflow = 0;
        unsigned long long u;
        long long sx = PyLong_AsLongLongAndOverflow(x, &overflow);
        if (overflow < 0 || (overflow == 0 && sx < 0))
            goto none;
        if (overflow > 0) {
            u = PyLong_AsUnsignedLongLong(x);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear(); /* above 2**64 - 1 */
                goto none;
            }
        } else {
            u = (unsigned long long)sx;
        }
        if (bits < 64 && (u >> bits) != 0)
            goto none;
        o = put_head(o, 0, u);
    }
    out = PyBytes_FromStringAndSize((const char *)buf, o - buf);
    goto done;
none:
    Py_INCREF(Py_None);
    out = Py_None;
done:
    if (buf != stack)
        PyMem_Free(buf);
    return out;
}

static PyMethodDef methods[] = {
    {"merkle_root", (PyCFunction)(void (*)(void))merkle_root, METH_FASTCALL,
     "merkle_root(payload, proof_offset, proof_size, index) -> bytes | None: the shred's Merkle root "
     "from its leaf payload[64:proof_offset] and proof; None when the proof is too short for index."},
    {"parse", (PyCFunction)(void (*)(void))parse, METH_FASTCALL,
     "parse(packet: bytes, variants: dict, shred_type: type) -> Shred | None: parse_shred's accept path; "
     "None when the Python path must decide."},
    {"uint_array", (PyCFunction)(void (*)(void))uint_array, METH_FASTCALL,
     "uint_array(v: tuple, bits, max_items) -> bytes | None: the CBOR array of v's unsigned ints in shortest "
     "form; None unless v is a tuple of at most max_items exact ints in [0, 2**bits)."},
    {"scan", (PyCFunction)scan, METH_O,
     "scan(packets) -> (cks, payloads, data_keys, code_keys, slots) | None: one blockstore insert's parse, "
     "sanitize, Merkle roots, keys and per-slot / per-FEC-set summary; None when the per-shred path must decide."},
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
    if ((k_data_cf = PyUnicode_InternFromString("data_shred")) == NULL
        || (k_code_cf = PyUnicode_InternFromString("code_shred")) == NULL)
        return NULL;
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
