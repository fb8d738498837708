/*
 * rtp2ws._wsframe: the C twin of rtp2ws.ws.frame.encode, which frames many
 * WebSocket messages as RFC 6455 client frames in one buffer, so that the
 * sender writes a connection's whole batch with one transport.write.
 *
 *   encode(messages, keys, split=0) -> bytes
 *
 * messages: a list or tuple.  A str is one text frame (its UTF-8 encoding);
 *     any other item is a contiguous buffer (bytes, bytearray, memoryview,
 *     numpy array) sent as binary frames: one frame, or with split > 0 cut
 *     into frames of split bytes, the last one shorter (an empty buffer is
 *     still one empty frame).
 * keys: bytes-like, 4 mask bytes per frame in frame order (RFC 6455 5.3:
 *     the caller draws them from a strong source, e.g. os.urandom); at least
 *     4 x the number of frames, the rest is ignored.
 *
 * Every frame has FIN=1, RSV1-3=0, opcode 0x1 (text) or 0x2 (binary), MASK=1,
 * a 7-, 16- or 64-bit payload length (5.2), the masking key, and the payload
 * XOR-ed with the key (5.3).  rtp2ws/wsframe.py is the pure-Python twin; the
 * same tests run against both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "drain.h"
#include "outbox.h"
#include "lane.h"
#include "wire.h"
#include "wsframe.h"

#define OP_TEXT WS_OP_TEXT
#define OP_BINARY WS_OP_BINARY

/* One message, resolved: where its payload is and how it is cut. */
typedef struct {
    const uint8_t *data;
    Py_ssize_t len;
    int opcode;
} piece;

static Py_ssize_t
header_len(Py_ssize_t n)
{
    return (Py_ssize_t)ws_header_len((size_t)n);
}

static uint8_t *
put_header(uint8_t *out, int opcode, Py_ssize_t n, const uint8_t *key)
{
    return ws_put_header(out, opcode, (size_t)n, key);
}

static uint8_t *
put_masked(uint8_t *out, const uint8_t *src, Py_ssize_t n, const uint8_t *key)
{
    return ws_put_masked(out, src, (size_t)n, key);
}

static PyObject *
wsframe_encode(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"messages", "keys", "split", NULL};
    PyObject *messages;
    Py_buffer keys;
    Py_ssize_t split = 0;
    (void)self;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oy*|n:encode", kwlist, &messages, &keys, &split))
        return NULL;

    PyObject *result = NULL;
    PyObject *seq = NULL;
    Py_buffer *views = NULL;
    piece *pieces = NULL;
    Py_ssize_t nviews = 0;
    Py_ssize_t count = 0;

    if (split < 0) {
        PyErr_SetString(PyExc_ValueError, "split must be 0 or more");
        goto done;
    }
    if (!PyList_Check(messages) && !PyTuple_Check(messages)) {
        PyErr_Format(PyExc_TypeError, "messages must be a list or a tuple, not %.100s",
                     Py_TYPE(messages)->tp_name);
        goto done;
    }
    seq = PySequence_Fast(messages, "messages must be a list or a tuple");
    if (seq == NULL)
        goto done;
    count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    pieces = PyMem_Malloc(sizeof(piece) * (count ? count : 1));
    views = PyMem_Malloc(sizeof(Py_buffer) * (count ? count : 1));
    if (pieces == NULL || views == NULL) {
        PyErr_NoMemory();
        goto done;
    }

    /* First pass: resolve every payload and size the output. */
    Py_ssize_t frames = 0;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = items[i];
        if (PyUnicode_Check(item)) {
            Py_ssize_t n;
            const char *utf8 = PyUnicode_AsUTF8AndSize(item, &n);
            if (utf8 == NULL)
                goto done;
            pieces[i].data = (const uint8_t *)utf8;
            pieces[i].len = n;
            pieces[i].opcode = OP_TEXT;
            frames += 1;
            total += header_len(n) + n;
            continue;
        }
        if (PyObject_GetBuffer(item, &views[nviews], PyBUF_C_CONTIGUOUS) < 0) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "message %zd: expected str or a contiguous buffer, not %.100s",
                         i, Py_TYPE(item)->tp_name);
            goto done;
        }
        Py_ssize_t n = views[nviews].len;
        pieces[i].data = (const uint8_t *)views[nviews].buf;
        pieces[i].len = n;
        pieces[i].opcode = OP_BINARY;
        nviews++;
        if (split > 0 && n > split) {
            Py_ssize_t whole = n / split, rest = n % split;
            frames += whole + (rest ? 1 : 0);
            total += whole * (header_len(split) + split) + (rest ? header_len(rest) + rest : 0);
        }
        else {
            frames += 1;
            total += header_len(n) + n;
        }
    }
    if (keys.len / 4 < frames) {
        PyErr_Format(PyExc_ValueError, "%zd frames need %zd mask key bytes, got %zd",
                     frames, frames * 4, keys.len);
        goto done;
    }

    /* Second pass: headers, keys and masked payloads. */
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL)
        goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    const uint8_t *key = (const uint8_t *)keys.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint8_t *src = pieces[i].data;
        Py_ssize_t n = pieces[i].len;
        int opcode = pieces[i].opcode;
        Py_ssize_t step = (opcode == OP_BINARY && split > 0 && n > split) ? split : n;
        Py_ssize_t pos = 0;
        do {
            Py_ssize_t len = n - pos < step ? n - pos : step;
            out = put_header(out, opcode, len, key);
            out = put_masked(out, src + pos, len, key);
            key += 4;
            pos += len;
        } while (pos < n);
    }
    assert(out == (uint8_t *)PyBytes_AS_STRING(result) + total);

done:
    for (Py_ssize_t i = 0; i < nviews; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(pieces);
    Py_XDECREF(seq);
    PyBuffer_Release(&keys);
    return result;
}

static PyMethodDef wsframe_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))wsframe_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(messages, keys, split=0) -> bytes\n\n"
     "RFC 6455 client frames (FIN, MASK, one key per frame) of every message, in order:\n"
     "a str is a text frame, a buffer binary frames (cut every split bytes when split > 0)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef wsframe_module = {
    PyModuleDef_HEAD_INIT,
    "rtp2ws._wsframe",
    "C twins of rtp2ws.ws.frame (many WebSocket client frames in one buffer),\n"
    "of rtp2ws.ws.outbox (Outbox, Totals: one stream's queue toward the server)\n"
    "of rtp2ws.ws.wire (Wire: one connection's socket writes; send_batches)\n"
    "and of the bench's discard sink after the handshake (Drain, DrainWalker).",
    -1,
    wsframe_methods,
};

PyMODINIT_FUNC
PyInit__wsframe(void)
{
    PyObject *m = PyModule_Create(&wsframe_module);
    if (m == NULL)
        return NULL;
    /* native/outbox.c, native/wire.c, native/lane.c, native/drain.c */
    if (ob_module_init(m) < 0 || wire_module_init(m) < 0 || lane_module_init(m) < 0
        || drain_module_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
