/*
 * Exact Hamming-radius search over 256-bit PDQ hashes: multi-index hashing and a linear scan.
 *
 * Multi-index hashing (Norouzi et al.) cuts each hash into 16 slots of 16 bits. If two hashes are
 * within distance r, some slot differs in at most r / 16 bits (pigeonhole), so probing every slot
 * value within r / 16 bits of the query's finds every match. For each slot, `orders` lists the entry
 * numbers sorted by that slot's value and `starts` (65537 offsets) says where each value begins.
 * A candidate is reported only from the first slot that could have found it, so no pair twice.
 *
 * The Python side (index.py) owns every buffer; this module only reads them, with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define SLOTS 16
#define KEYS 65536

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("popcnt", "default")))
#else
#define MULTIVERSION
#endif

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

static inline uint16_t slot_of(const uint8_t *hash, int s) {
    return (uint16_t)(hash[2 * s] | (hash[2 * s + 1] << 8));
}

MULTIVERSION
static int distance(const uint8_t *a, const uint8_t *b) {
    return __builtin_popcountll(load64(a) ^ load64(b)) + __builtin_popcountll(load64(a + 8) ^ load64(b + 8)) +
           __builtin_popcountll(load64(a + 16) ^ load64(b + 16)) + __builtin_popcountll(load64(a + 24) ^ load64(b + 24));
}

MULTIVERSION
static int slot_distance(const uint8_t *a, const uint8_t *b, int s) {
    return __builtin_popcount((unsigned)(slot_of(a, s) ^ slot_of(b, s)));
}

/* All 16-bit masks with at most `r` bits set (r <= 3: 697 masks at most), fewest bits first. */
static int probe_masks(int r, uint16_t *masks) {
    int n = 0;
    masks[n++] = 0;
    for (int i = 0; i < 16 && r >= 1; i++) masks[n++] = (uint16_t)(1u << i);
    for (int i = 0; i < 16 && r >= 2; i++)
        for (int j = i + 1; j < 16; j++) masks[n++] = (uint16_t)((1u << i) | (1u << j));
    for (int i = 0; i < 16 && r >= 3; i++)
        for (int j = i + 1; j < 16; j++)
            for (int k = j + 1; k < 16; k++) masks[n++] = (uint16_t)((1u << i) | (1u << j) | (1u << k));
    return n;
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

static PyObject *hits_result(Hits *h) {
    PyObject *out = PyBytes_FromStringAndSize((const char *)h->data, h->len * (Py_ssize_t)sizeof(int64_t));
    free(h->data);
    return out;
}

/* build(hashes) -> (orders, starts): counting sort of the entries by each slot. */
static PyObject *mih_build(PyObject *self, PyObject *args) {
    PyObject *hashes_obj;
    if (!PyArg_ParseTuple(args, "O", &hashes_obj)) return NULL;
    Py_buffer hv;
    if (get_buffer(hashes_obj, &hv, "hashes", 32) < 0) return NULL;
    Py_ssize_t n = hv.len / 32;
    if (n > UINT32_MAX) {
        PyBuffer_Release(&hv);
        return PyErr_Format(PyExc_ValueError, "at most 2**32 hashes");
    }
    PyObject *orders = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)SLOTS * n * 4);
    PyObject *starts = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)SLOTS * (KEYS + 1) * 4);
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
    for (int s = 0; s < SLOTS; s++) {
        uint32_t *start = st + (size_t)s * (KEYS + 1);
        uint32_t *order = ord + (size_t)s * n;
        memset(start, 0, (KEYS + 1) * sizeof(uint32_t));
        for (Py_ssize_t i = 0; i < n; i++) start[slot_of(hashes + 32 * i, s) + 1]++;
        for (int k = 0; k < KEYS; k++) start[k + 1] += start[k];
        for (Py_ssize_t i = 0; i < n; i++) {
            /* start[key] is advanced while filling, then restored below */
            order[start[slot_of(hashes + 32 * i, s)]++] = (uint32_t)i;
        }
        for (int k = KEYS; k > 0; k--) start[k] = start[k - 1];
        start[0] = 0;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&hv);
    return Py_BuildValue("(NN)", orders, starts);
}

/* One query at a time: for few queries, where sorting probes by bucket would cost more than it saves. */
MULTIVERSION
static int search_each(const uint8_t *hashes, Py_ssize_t n, const uint32_t *orders, const uint32_t *starts,
                       const uint8_t *queries, Py_ssize_t m, int radius, const uint16_t *masks, int nmasks, Hits *hits) {
    int r = radius / SLOTS;
    for (Py_ssize_t qi = 0; qi < m; qi++) {
        const uint8_t *q = queries + 32 * qi;
        for (int s = 0; s < SLOTS; s++) {
            const uint32_t *start = starts + (size_t)s * (KEYS + 1);
            const uint32_t *order = orders + (size_t)s * n;
            uint16_t key = slot_of(q, s);
            for (int p = 0; p < nmasks; p++) {
                uint16_t probe = key ^ masks[p];
                uint32_t lo = start[probe], hi = start[probe + 1];
                for (uint32_t k = lo; k < hi; k++) {
                    if (k + 8 < hi) __builtin_prefetch(hashes + 32 * (size_t)order[k + 8]);
                    const uint8_t *e = hashes + 32 * (size_t)order[k];
                    int d = distance(q, e);
                    if (d > radius) continue;
                    int earlier = 0;
                    for (int t = 0; t < s && !earlier; t++) earlier = slot_distance(q, e, t) <= r;
                    if (!earlier && hits_push(hits, qi, order[k], d) < 0) return -1;
                }
            }
        }
    }
    return 0;
}

/* Many queries: per slot, sort every (probe value, query) pair by value, then walk the buckets in
 * order. Each listed hash is loaded once per slot and compared with every query that probes its
 * bucket, so random memory reads fall by the number of queries per bucket. */
MULTIVERSION
static int search_batched(const uint8_t *hashes, Py_ssize_t n, const uint32_t *orders, const uint32_t *starts,
                          const uint8_t *queries, Py_ssize_t m, int radius, const uint16_t *masks, int nmasks,
                          Hits *hits) {
    int r = radius / SLOTS;
    Py_ssize_t probes = m * nmasks;
    uint32_t *bucket_start = (uint32_t *)malloc((KEYS + 1) * sizeof(uint32_t));
    uint32_t *probe_query = (uint32_t *)malloc((size_t)probes * sizeof(uint32_t));
    if (!bucket_start || !probe_query) {
        free(bucket_start);
        free(probe_query);
        return -1;
    }
    int rc = 0;
    for (int s = 0; s < SLOTS && rc == 0; s++) {
        const uint32_t *start = starts + (size_t)s * (KEYS + 1);
        const uint32_t *order = orders + (size_t)s * n;
        memset(bucket_start, 0, (KEYS + 1) * sizeof(uint32_t));
        for (Py_ssize_t qi = 0; qi < m; qi++) {
            uint16_t key = slot_of(queries + 32 * qi, s);
            for (int p = 0; p < nmasks; p++) bucket_start[(uint16_t)(key ^ masks[p]) + 1]++;
        }
        for (int k = 0; k < KEYS; k++) bucket_start[k + 1] += bucket_start[k];
        for (Py_ssize_t qi = 0; qi < m; qi++) {
            uint16_t key = slot_of(queries + 32 * qi, s);
            for (int p = 0; p < nmasks; p++) probe_query[bucket_start[(uint16_t)(key ^ masks[p])]++] = (uint32_t)qi;
        }
        /* bucket_start[k] now ends bucket k; bucket k spans [end of k-1, end of k) */
        uint32_t qbegin = 0;
        for (int k = 0; k < KEYS && rc == 0; k++) {
            uint32_t qend = bucket_start[k];
            if (qend == qbegin) continue;
            uint32_t lo = start[k], hi = start[k + 1];
            for (uint32_t j = lo; j < hi && rc == 0; j++) {
                if (j + 4 < hi) __builtin_prefetch(hashes + 32 * (size_t)order[j + 4]);
                const uint8_t *e = hashes + 32 * (size_t)order[j];
                for (uint32_t x = qbegin; x < qend; x++) {
                    const uint8_t *q = queries + 32 * (size_t)probe_query[x];
                    int d = distance(q, e);
                    if (d > radius) continue;
                    int earlier = 0;
                    for (int t = 0; t < s && !earlier; t++) earlier = slot_distance(q, e, t) <= r;
                    if (!earlier && hits_push(hits, probe_query[x], order[j], d) < 0) rc = -1;
                }
            }
            qbegin = qend;
        }
    }
    free(bucket_start);
    free(probe_query);
    return rc;
}

static int search_mih(const uint8_t *hashes, Py_ssize_t n, const uint32_t *orders, const uint32_t *starts,
                      const uint8_t *queries, Py_ssize_t m, int radius, Hits *hits) {
    uint16_t masks[697];
    int nmasks = probe_masks(radius / SLOTS, masks);
    /* Sorting the probes costs a pass over 65536 buckets per slot: worth it once queries are many. */
    if (m * nmasks >= 4096)
        return search_batched(hashes, n, orders, starts, queries, m, radius, masks, nmasks, hits);
    return search_each(hashes, n, orders, starts, queries, m, radius, masks, nmasks, hits);
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

/* search(hashes, orders, starts, queries, radius) -> bytes of int64 (query, entry, distance) triplets.
 * `orders` and `starts` may be None: then every entry is compared (small lists, huge radii). */
static PyObject *mih_search(PyObject *self, PyObject *args) {
    PyObject *hashes_obj, *orders_obj, *starts_obj, *queries_obj;
    int radius;
    if (!PyArg_ParseTuple(args, "OOOOi", &hashes_obj, &orders_obj, &starts_obj, &queries_obj, &radius)) return NULL;
    if (radius < 0 || radius > 256) return PyErr_Format(PyExc_ValueError, "radius must be in 0..256");
    int use_mih = orders_obj != Py_None && radius / SLOTS <= 3;
    Py_buffer hv, qv, ov = {0}, sv = {0};
    if (get_buffer(hashes_obj, &hv, "hashes", 32) < 0) return NULL;
    if (get_buffer(queries_obj, &qv, "queries", 32) < 0) {
        PyBuffer_Release(&hv);
        return NULL;
    }
    Py_ssize_t n = hv.len / 32, m = qv.len / 32;
    if (use_mih) {
        if (get_buffer(orders_obj, &ov, "orders", 4) < 0) goto fail;
        if (get_buffer(starts_obj, &sv, "starts", 4) < 0) goto fail;
        if (ov.len != (Py_ssize_t)SLOTS * n * 4 || sv.len != (Py_ssize_t)SLOTS * (KEYS + 1) * 4) {
            PyErr_SetString(PyExc_ValueError, "orders/starts do not belong to these hashes");
            goto fail;
        }
    }
    Hits hits = {NULL, 0, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (use_mih)
        rc = search_mih((const uint8_t *)hv.buf, n, (const uint32_t *)ov.buf, (const uint32_t *)sv.buf,
                        (const uint8_t *)qv.buf, m, radius, &hits);
    else
        rc = search_linear((const uint8_t *)hv.buf, n, (const uint8_t *)qv.buf, m, radius, &hits);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&hv);
    PyBuffer_Release(&qv);
    if (use_mih) {
        PyBuffer_Release(&ov);
        PyBuffer_Release(&sv);
    }
    if (rc < 0) {
        free(hits.data);
        return PyErr_NoMemory();
    }
    return hits_result(&hits);
fail:
    PyBuffer_Release(&hv);
    PyBuffer_Release(&qv);
    if (ov.obj) PyBuffer_Release(&ov);
    if (sv.obj) PyBuffer_Release(&sv);
    return NULL;
}

static PyMethodDef methods[] = {
    {"build", mih_build, METH_VARARGS, "build(hashes) -> (orders, starts): per-slot counting sort."},
    {"search", mih_search, METH_VARARGS,
     "search(hashes, orders, starts, queries, radius) -> int64 (query, entry, distance) triplets."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mih", "Exact radius search over PDQ hashes.", -1, methods};

PyMODINIT_FUNC PyInit__mih(void) { return PyModule_Create(&module); }
