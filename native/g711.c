/*
 * rtp2ws._native, G.711 part: the C twin of the decoders in rtp2ws.codec.g711.
 *
 *   decode_alaw(payload) -> bytearray of int16 (native byte order)
 *   decode_ulaw(payload) -> bytearray of int16 (native byte order)
 *
 * Bit-identical to the numpy table look-ups there (the tables are computed
 * here from the same G.711 definitions); the same tests run against both.
 * See rtp2ws/_native.pyi.
 */
#include "native.h"

#include <stdint.h>

static int16_t alaw_table[256];
static int16_t ulaw_table[256];

static void
build_g711_tables(void)
{
    for (int i = 0; i < 256; i++) {
        /* A-law: undo even-bit inversion; sign bit set means positive. */
        int a = i ^ 0x55;
        int exponent = (a >> 4) & 0x07;
        int mantissa = a & 0x0F;
        int magnitude = exponent == 0
            ? (mantissa << 4) + 8
            : ((mantissa << 4) + 0x108) << (exponent - 1);
        alaw_table[i] = (int16_t)((a & 0x80) ? magnitude : -magnitude);

        /* µ-law: all bits inverted, bias 0x84; sign bit set means negative. */
        int u = ~i & 0xFF;
        exponent = (u >> 4) & 0x07;
        mantissa = u & 0x0F;
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
        ulaw_table[i] = (int16_t)((u & 0x80) ? -magnitude : magnitude);
    }
}

static PyObject *
decode_with(const int16_t *table, PyObject *args)
{
    Py_buffer payload;
    if (!PyArg_ParseTuple(args, "y*", &payload))
        return NULL;
    Py_ssize_t n = payload.len;
    PyObject *out = PyByteArray_FromStringAndSize(NULL, n * 2);
    if (out == NULL) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    const uint8_t *src = (const uint8_t *)payload.buf;
    int16_t *dst = (int16_t *)PyByteArray_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++)
        dst[i] = table[src[i]];
    PyBuffer_Release(&payload);
    return out;
}

static PyObject *
native_decode_alaw(PyObject *self, PyObject *args)
{
    (void)self;
    return decode_with(alaw_table, args);
}

static PyObject *
native_decode_ulaw(PyObject *self, PyObject *args)
{
    (void)self;
    return decode_with(ulaw_table, args);
}

PyMethodDef rtp2ws_g711_methods[] = {
    {"decode_alaw", native_decode_alaw, METH_VARARGS,
     "decode_alaw(payload) -> bytearray of native-order int16 samples."},
    {"decode_ulaw", native_decode_ulaw, METH_VARARGS,
     "decode_ulaw(payload) -> bytearray of native-order int16 samples."},
    {NULL, NULL, 0, NULL},
};

void
rtp2ws_g711_init(void)
{
    build_g711_tables();
}
