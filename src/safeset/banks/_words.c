/* Captions as keyword matching reads them (see keywords.py): each value of a column written
 * between a space before and one after, its ASCII bytes mapped through a table (letters lower-
 * cased, digits kept, the rest a space), each other character kept where a bitmap of code points
 * says it is part of a word and a space where not, and every run of spaces within it made one.
 * One pass over the column's buffers, the GIL released: the Python loop, or numpy's scatter and
 * cumulative sums, cost ten times as much per byte, and Python's regular expression over a class
 * of every letter, digit and mark forty times as much. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define WORDS_POINTS 0x110000
#define WORDS_BYTES (WORDS_POINTS / 8)

static PyObject *padded_words(PyObject *self, PyObject *args) {
    Py_buffer values, offsets, table, words;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &values, &offsets, &table, &words)) return NULL;
    PyObject *result = NULL, *text = NULL, *bounds = NULL;
    Py_ssize_t n = offsets.len / (Py_ssize_t)sizeof(int64_t) - 1;
    const int64_t *at = (const int64_t *)offsets.buf;
    if (n < 0 || offsets.len % sizeof(int64_t) || table.len != 256 || (words.len && words.len != WORDS_BYTES)) {
        PyErr_SetString(PyExc_ValueError, "offsets: n + 1 int64; table: 256 bytes; words: none or a bit per code point");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (at[i] < 0 || at[i] > at[i + 1] || at[i + 1] > values.len) {
            PyErr_SetString(PyExc_ValueError, "offsets out of order or beyond the values");
            goto done;
        }
    }
    Py_ssize_t room = (n ? at[n] - at[0] : 0) + 2 * n;
    if (room > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "over 2 GiB of captions in one call");
        goto done;
    }
    text = PyBytes_FromStringAndSize(NULL, room);
    bounds = PyBytes_FromStringAndSize(NULL, (n + 1) * (Py_ssize_t)sizeof(int32_t));
    if (!text || !bounds) goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(text);
    int32_t *ends = (int32_t *)PyBytes_AS_STRING(bounds);
    const uint8_t *data = (const uint8_t *)values.buf, *map = (const uint8_t *)table.buf;
    const uint8_t *word = words.len ? (const uint8_t *)words.buf : NULL;
    Py_ssize_t w = 0;
    Py_BEGIN_ALLOW_THREADS
    ends[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        out[w++] = ' ';
        for (int64_t j = at[i], end = at[i + 1]; j < end; j++) {
            uint8_t b = data[j];
            if (b >= 0x80 && word) {  /* a character of UTF-8: kept whole, or one space */
                int more = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : b >= 0xC0 ? 1 : 0;
                uint32_t point = more == 3 ? b & 0x07 : more == 2 ? b & 0x0F : b & 0x1F;
                int whole = more > 0 && j + more < end;
                for (int k = 1; whole && k <= more; k++) {
                    whole = (data[j + k] & 0xC0) == 0x80;
                    point = point << 6 | (data[j + k] & 0x3F);
                }
                if (whole && point < WORDS_POINTS && !(word[point >> 3] >> (point & 7) & 1)) {
                    if (out[w - 1] != ' ') out[w++] = ' ';
                    j += more;
                } else if (whole) { /* part of a word */
                    for (int k = 0; k <= more; k++) out[w++] = data[j + k];
                    j += more;
                } else {  /* not UTF-8 (never from Python's strings): kept as it is */
                    out[w++] = b;
                }
                continue;
            }
            uint8_t c = map[b];
            if (c != ' ' || out[w - 1] != ' ') out[w++] = c;
        }
        if (out[w - 1] != ' ') out[w++] = ' ';
        ends[i + 1] = (int32_t)w;
    }
    Py_END_ALLOW_THREADS
    if (_PyBytes_Resize(&text, w) == 0) result = Py_BuildValue("(OO)", text, bounds);
done:
    Py_XDECREF(text);
    Py_XDECREF(bounds);
    PyBuffer_Release(&values);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&table);
    PyBuffer_Release(&words);
    return result;
}

static PyMethodDef methods[] = {
    {"padded_words", padded_words, METH_VARARGS,
     "padded_words(values, offsets, table, words) -> (text, ends): each values[offsets[i]:offsets[i+1]], "
     "its ASCII mapped through table and its other characters kept where the bitmap words (a bit per "
     "code point, or empty: all kept) says so, else a space, as ' words ' with single spaces; ends: n + 1 "
     "int32 offsets into text."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_words", "Captions padded and spaced for keyword matching.", -1, methods};

PyMODINIT_FUNC PyInit__words(void) { return PyModule_Create(&module); }
