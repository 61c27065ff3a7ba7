/*
 * Exact Hamming-radius search over 256-bit PDQ hashes: multi-index hashing and a linear scan.
 *
 * Multi-index hashing (Norouzi et al.) cuts each hash into m slots (11..16 of them, 16 to 24 bits
 * wide). If two hashes are within distance r, some slot differs in at most r / m bits (pigeonhole),
 * so probing every slot value within r / m bits of the query's finds every match. The best m grows
 * with the list (about 256 / log2 N): 16 slots of 16 bits leave 150 entries in a bucket of a
 * 10M-hash list, each a random read of its hash, where 11 slots of 23-24 bits leave about one.
 * The Python side (index.py) picks m; `layout` says how m slots cut the 256 bits.
 *
 * For each slot, `orders` lists the entry numbers sorted by that slot's value and `starts`
 * (2**width + 1 offsets per slot, the slots one after another) says where each value begins.
 * A candidate is reported only from the first slot that could have found it, so no pair twice.
 * A query's probes, bucket ranges and candidates are gathered in stages, each prefetching a few
 * steps ahead, so that the memory reads of one stage overlap instead of waiting one by one.
 *
 * The Python side owns every buffer; this module only reads them, with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN_SLOTS 11
#define MAX_SLOTS 16
#define MAX_SLOT_RADIUS 4 /* masks of up to 4 bits: at most 12,951 for a 24-bit slot */
#define AHEAD 16          /* prefetch distance, in items of the stage */

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("popcnt", "default")))
#else
#define MULTIVERSION
#endif

typedef struct {
    int m;
    int width[MAX_SLOTS], offset[MAX_SLOTS];
    size_t start_at[MAX_SLOTS]; /* where the slot's offsets begin in `starts` */
    size_t starts_len;
} Layout;

/* m slots over 256 bits: the first 256 % m are one bit wider than the rest. */
static int layout_of(int m, Layout *L) {
    if (m < MIN_SLOTS || m > MAX_SLOTS) return -1;
    int base = 256 / m, wider = 256 % m, offset = 0;
    size_t at = 0;
    L->m = m;
    for (int s = 0; s < m; s++) {
        int w = base + (s < wider);
        L->width[s] = w;
        L->offset[s] = offset;
        L->start_at[s] = at;
        offset += w;
        at += ((size_t)1 << w) + 1;
    }
    L->starts_len = at;
    return 0;
}

typedef struct {
    int64_t *data; /* triplets: query, entry, distance */
    Py_ssize_t len, cap;
} Hits;

static int hits_push(Hits *h, int64_t q, int64_t e, int64_t d) {
    if (h->len + 3 > h->cap) {
        Py_ssize_t cap = h->cap ? h->cap * 2 : 3 * 1024;
        int64_t *grown = (int64_t *)realloc(h->data, (size_t)cap * sizeof(int64_t));
        if (!grown) return -1;
        h->data = grown;
        h->cap = cap;
    }
    h->data[h->len++] = q;
    h->data[h->len++] = e;
    h->data[h->len++] = d;
    return 0;
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* The slot's bits, little-endian: an 8-byte load that never reads past the hash's 32 bytes. */
static inline uint32_t slot_value(const uint8_t *hash, const Layout *L, int s) {
    int byte = L->offset[s] >> 3;
    if (byte > 24) byte = 24;
    int shift = L->offset[s] - 8 * byte;
    return (uint32_t)((load64(hash + byte) >> shift) & ((1u << L->width[s]) - 1));
}

MULTIVERSION
static int distance(const uint8_t *a, const uint8_t *b) {
    return __builtin_popcountll(load64(a) ^ load64(b)) + __builtin_popcountll(load64(a + 8) ^ load64(b + 8)) +
           __builtin_popcountll(load64(a + 16) ^ load64(b + 16)) + __builtin_popcountll(load64(a + 24) ^ load64(b + 24));
}

/* Every `width`-bit mask with at most `r` bits set, fewest bits first. */
static uint32_t *probe_masks(int width, int r, Py_ssize_t *count) {
    Py_ssize_t n = 0, cap = 1;
    for (int k = 1, c = 1; k <= r; k++) {
        c = c * (width - k + 1) / k;
        cap += c;
    }
    uint32_t *masks = (uint32_t *)malloc((size_t)cap * sizeof(uint32_t));
    if (!masks) return NULL;
    masks[n++] = 0;
    for (int bits = 1; bits <= r; bits++) { /* combinations of `bits` positions, in order */
        int pos[MAX_SLOT_RADIUS];
        for (int i = 0; i < bits; i++) pos[i] = i;
        for (;;) {
            uint32_t mask = 0;
            for (int i = 0; i < bits; i++) mask |= 1u << pos[i];
            masks[n++] = mask;
            int i = bits - 1;
            while (i >= 0 && pos[i] == width - bits + i) i--;
            if (i < 0) break;
            pos[i]++;
            for (int j = i + 1; j < bits; j++) pos[j] = pos[j - 1] + 1;
        }
    }
    *count = n;
    return masks;
}

typedef struct {
    uint32_t *data;
    size_t len, cap;
} U32s;

static int u32s_reserve(U32s *v, size_t more) {
    if (v->len + more <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 4096;
    while (cap < v->len + more) cap *= 2;
    uint32_t *grown = (uint32_t *)realloc(v->data, cap * sizeof(uint32_t));
    if (!grown) return -1;
    v->data = grown;
    v->cap = cap;
    return 0;
}

/* 0, or -1 out of memory, or -2 tables whose contents point past the hashes. */
MULTIVERSION
static int search_mih(const uint8_t *hashes, Py_ssize_t n, const uint32_t *orders, const uint32_t *starts,
                      const Layout *L, const uint8_t *queries, Py_ssize_t m, int radius, Hits *hits) {
    int r = radius / L->m, rc = -1;
    uint32_t *masks[2] = {NULL, NULL}; /* for the wider slots, then the narrower */
    Py_ssize_t nmasks[2] = {0, 0};
    U32s ranges = {0}, cands = {0};
    for (int i = 0; i < 2; i++) {
        masks[i] = probe_masks(L->width[0] - i, r, &nmasks[i]);
        if (!masks[i]) goto done;
    }
    if (u32s_reserve(&ranges, 2 * (size_t)nmasks[0]) < 0) goto done;
    for (Py_ssize_t qi = 0; qi < m; qi++) {
        const uint8_t *q = queries + 32 * qi;
        uint32_t key[MAX_SLOTS];
        for (int s = 0; s < L->m; s++) key[s] = slot_value(q, L, s);
        for (int s = 0; s < L->m; s++) {
            const uint32_t *start = starts + L->start_at[s];
            const uint32_t *order = orders + (size_t)s * n;
            const uint32_t *mk = masks[L->width[s] != L->width[0]];
            Py_ssize_t nm = nmasks[L->width[s] != L->width[0]];
            /* 1: the non-empty buckets among the probes */
            size_t nr = 0;
            for (Py_ssize_t p = 0; p < nm; p++) {
                if (p + AHEAD < nm) __builtin_prefetch(start + (key[s] ^ mk[p + AHEAD]));
                uint32_t probe = key[s] ^ mk[p], lo = start[probe], hi = start[probe + 1];
                if (hi > (uint64_t)n || lo > hi) { /* tables damaged on disk: never read past them */
                    rc = -2;
                    goto done;
                }
                if (hi > lo) {
                    ranges.data[nr++] = lo;
                    ranges.data[nr++] = hi;
                }
            }
            /* 2: the entries in them */
            cands.len = 0;
            for (size_t i = 0; i < nr; i += 2) {
                if (i + 2 * AHEAD < nr) __builtin_prefetch(order + ranges.data[i + 2 * AHEAD]);
                uint32_t lo = ranges.data[i], hi = ranges.data[i + 1];
                if (u32s_reserve(&cands, hi - lo) < 0) goto done;
                memcpy(cands.data + cands.len, order + lo, (size_t)(hi - lo) * sizeof(uint32_t));
                cands.len += hi - lo;
            }
            /* 3: their distances */
            for (size_t j = 0; j < cands.len; j++) {
                if (j + AHEAD < cands.len && cands.data[j + AHEAD] < (uint64_t)n)
                    __builtin_prefetch(hashes + 32 * (size_t)cands.data[j + AHEAD]);
                if (cands.data[j] >= (uint64_t)n) {
                    rc = -2;
                    goto done;
                }
                const uint8_t *e = hashes + 32 * (size_t)cands.data[j];
                int d = distance(q, e);
                if (d > radius) continue;
                int earlier = 0;
                for (int t = 0; t < s && !earlier; t++)
                    earlier = __builtin_popcount(key[t] ^ slot_value(e, L, t)) <= r;
                if (!earlier && hits_push(hits, qi, cands.data[j], d) < 0) goto done;
            }
        }
    }
    rc = 0;
done:
    free(masks[0]);
    free(masks[1]);
    free(ranges.data);
    free(cands.data);
    return rc;
}

MULTIVERSION
static int search_linear(const uint8_t *hashes, Py_ssize_t n, const uint8_t *queries, Py_ssize_t m, int radius,
                         Hits *hits) {
    for (Py_ssize_t qi = 0; qi < m; qi++) {
        const uint8_t *q = queries + 32 * qi;
        for (Py_ssize_t i = 0; i < n; i++) {
            int d = distance(q, hashes + 32 * i);
            if (d <= radius && hits_push(hits, qi, i, d) < 0) return -1;
        }
    }
    return 0;
}

static int get_buffer(PyObject *obj, Py_buffer *view, const char *what, Py_ssize_t multiple) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (multiple && view->len % multiple) {
        PyErr_Format(PyExc_ValueError, "%s: length %zd is not a multiple of %zd", what, view->len, multiple);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* layout(m) -> the slot widths, or ValueError for an m the module does not cut. */
static PyObject *mih_layout(PyObject *self, PyObject *args) {
    int m;
    if (!PyArg_ParseTuple(args, "i", &m)) return NULL;
    Layout L;
    if (layout_of(m, &L) < 0) return PyErr_Format(PyExc_ValueError, "slots must be %d..%d", MIN_SLOTS, MAX_SLOTS);
    PyObject *widths = PyTuple_New(m);
    if (!widths) return NULL;
    for (int s = 0; s < m; s++) PyTuple_SET_ITEM(widths, s, PyLong_FromLong(L.width[s]));
    return widths;
}

/* build(hashes, m) -> (orders, starts): counting sort of the entries by each of the m slots. */
static PyObject *mih_build(PyObject *self, PyObject *args) {
    PyObject *hashes_obj;
    int m;
    if (!PyArg_ParseTuple(args, "Oi", &hashes_obj, &m)) return NULL;
    Layout L;
    if (layout_of(m, &L) < 0) return PyErr_Format(PyExc_ValueError, "slots must be %d..%d", MIN_SLOTS, MAX_SLOTS);
    Py_buffer hv;
    if (get_buffer(hashes_obj, &hv, "hashes", 32) < 0) return NULL;
    Py_ssize_t n = hv.len / 32;
    if (n >= UINT32_MAX) {
        PyBuffer_Release(&hv);
        return PyErr_Format(PyExc_ValueError, "fewer than 2**32 hashes");
    }
    PyObject *orders = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)m * n * 4);
    PyObject *starts = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)L.starts_len * 4);
    if (!orders || !starts) {
        Py_XDECREF(orders);
        Py_XDECREF(starts);
        PyBuffer_Release(&hv);
        return NULL;
    }
    const uint8_t *hashes = (const uint8_t *)hv.buf;
    uint32_t *ord = (uint32_t *)PyBytes_AS_STRING(orders);
    uint32_t *st = (uint32_t *)PyBytes_AS_STRING(starts);
    Py_BEGIN_ALLOW_THREADS
    for (int s = 0; s < m; s++) {
        size_t keys = (size_t)1 << L.width[s];
        uint32_t *start = st + L.start_at[s];
        uint32_t *order = ord + (size_t)s * n;
        memset(start, 0, (keys + 1) * sizeof(uint32_t));
        for (Py_ssize_t i = 0; i < n; i++) start[slot_value(hashes + 32 * i, &L, s) + 1]++;
        for (size_t k = 0; k < keys; k++) start[k + 1] += start[k];
        /* start[key] is advanced while filling, then restored below */
        for (Py_ssize_t i = 0; i < n; i++) order[start[slot_value(hashes + 32 * i, &L, s)]++] = (uint32_t)i;
        for (size_t k = keys; k > 0; k--) start[k] = start[k - 1];
        start[0] = 0;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&hv);
    return Py_BuildValue("(NN)", orders, starts);
}

/* search(hashes, orders, starts, queries, radius) -> bytes of int64 (query, entry, distance) triplets.
 * The slot count is orders' length over the hashes'. `orders` and `starts` may be None: then every
 * entry is compared (small lists, huge radii). */
static PyObject *mih_search(PyObject *self, PyObject *args) {
    PyObject *hashes_obj, *orders_obj, *starts_obj, *queries_obj;
    int radius;
    if (!PyArg_ParseTuple(args, "OOOOi", &hashes_obj, &orders_obj, &starts_obj, &queries_obj, &radius)) return NULL;
    if (radius < 0 || radius > 256) return PyErr_Format(PyExc_ValueError, "radius must be in 0..256");
    Py_buffer hv, qv, ov = {0}, sv = {0};
    Layout L = {0};
    if (get_buffer(hashes_obj, &hv, "hashes", 32) < 0) return NULL;
    if (get_buffer(queries_obj, &qv, "queries", 32) < 0) {
        PyBuffer_Release(&hv);
        return NULL;
    }
    Py_ssize_t n = hv.len / 32, m = qv.len / 32;
    int tables = orders_obj != Py_None;
    if (tables) {
        if (get_buffer(orders_obj, &ov, "orders", 4) < 0) goto fail;
        if (get_buffer(starts_obj, &sv, "starts", 4) < 0) goto fail;
        Py_ssize_t per_hash = n ? ov.len / 4 / n : 0;
        if (!n || ov.len != per_hash * n * 4 || layout_of((int)per_hash, &L) < 0 ||
            (size_t)sv.len != L.starts_len * 4) {
            PyErr_SetString(PyExc_ValueError, "orders/starts do not belong to these hashes");
            goto fail;
        }
    }
    int use_mih = tables && radius / L.m <= MAX_SLOT_RADIUS;
    Hits hits = {NULL, 0, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (use_mih)
        rc = search_mih((const uint8_t *)hv.buf, n, (const uint32_t *)ov.buf, (const uint32_t *)sv.buf, &L,
                        (const uint8_t *)qv.buf, m, radius, &hits);
    else
        rc = search_linear((const uint8_t *)hv.buf, n, (const uint8_t *)qv.buf, m, radius, &hits);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&hv);
    PyBuffer_Release(&qv);
    if (tables) {
        PyBuffer_Release(&ov);
        PyBuffer_Release(&sv);
    }
    if (rc < 0) {
        free(hits.data);
        if (rc == -2) return PyErr_Format(PyExc_ValueError, "the search tables are damaged (an offset past the hashes)");
        return PyErr_NoMemory();
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)hits.data, hits.len * (Py_ssize_t)sizeof(int64_t));
    free(hits.data);
    return out;
fail:
    PyBuffer_Release(&hv);
    PyBuffer_Release(&qv);
    if (ov.obj) PyBuffer_Release(&ov);
    if (sv.obj) PyBuffer_Release(&sv);
    return NULL;
}

static PyMethodDef methods[] = {
    {"layout", mih_layout, METH_VARARGS, "layout(m) -> the widths of m slots over 256 bits."},
    {"build", mih_build, METH_VARARGS, "build(hashes, m) -> (orders, starts): per-slot counting sort."},
    {"search", mih_search, METH_VARARGS,
     "search(hashes, orders, starts, queries, radius) -> int64 (query, entry, distance) triplets."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mih", "Exact radius search over PDQ hashes.", -1, methods};

PyMODINIT_FUNC PyInit__mih(void) { return PyModule_Create(&module); }
