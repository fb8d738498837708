/*
 * rtp2ws._native: C twins of the hot loops in rtp2ws.g711 and rtp2ws.resample.
 *
 * Every function here gives bit-identical results to the numpy code in those
 * modules; the same tests run against both.  No external libraries.
 *
 *   decode_alaw(payload) -> bytearray of int16 (native byte order)
 *   decode_ulaw(payload) -> bytearray of int16 (native byte order)
 *   upsample2x(phases, frac_bits, history, samples) -> (bytearray, bytes)
 *
 * Samples and taps are passed as raw buffers in native byte order (numpy
 * arrays or bytes); see rtp2ws/_native.pyi.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* ---- G.711 ------------------------------------------------------------- */

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

/* ---- 2x polyphase interpolator ---------------------------------------- */

/* floor(acc / 2**shift) without relying on >> of a negative number. */
static inline int64_t
floor_shift(int64_t acc, int shift)
{
    return acc >= 0 ? (acc >> shift) : ~((~acc) >> shift);
}

static inline int16_t
saturate16(int64_t v)
{
    if (v > 32767)
        return 32767;
    if (v < -32768)
        return -32768;
    return (int16_t)v;
}

/*
 * y[2j + p] = sum_k phases[p][k] * buf[j + K - 1 - k] for every j with a full
 * window, rounded half up and saturated.  The taps are reversed so the inner
 * loop is a forward dot product over a contiguous window, trimmed to the
 * non-zero span of each phase (a half-band phase 0 is a single tap).
 *
 * Fast path: each tap is split as hi * 2048 + lo with lo in [-1024, 1024), so
 * both halves are int16 and the two dot products are int16 x int16 sums in
 * int32 (which compilers turn into SIMD multiply-adds).  It is taken only
 * when no int32 sum can overflow (sum |hi| and sum |lo| times 32768 fit), so
 * (int64)sum_hi * 2048 + sum_lo is exactly the int64 dot product; otherwise
 * the plain int64 loop runs.  Both give the same bits.
 */
typedef struct {
    Py_ssize_t lo, hi;   /* non-zero span of the reversed taps */
    int32_t *taps;       /* reversed taps, K of them */
    int16_t *taps_hi;    /* split taps, fast path only */
    int16_t *taps_lo;
} phase_t;

static int
prepare_phase(phase_t *ph, const int32_t *taps, Py_ssize_t K)
{
    int64_t sum_hi = 0, sum_lo = 0;
    int fits = 1;
    ph->lo = K;
    ph->hi = 0;
    for (Py_ssize_t t = 0; t < K; t++) {
        int32_t tap = taps[K - 1 - t];
        int64_t hi = floor_shift((int64_t)tap + 1024, 11);
        int64_t lo = (int64_t)tap - hi * 2048;
        ph->taps[t] = tap;
        if (hi < INT16_MIN || hi > INT16_MAX)
            fits = 0;
        else {
            ph->taps_hi[t] = (int16_t)hi;
            ph->taps_lo[t] = (int16_t)lo;
        }
        sum_hi += hi < 0 ? -hi : hi;
        sum_lo += lo < 0 ? -lo : lo;
        if (tap != 0) {
            if (t < ph->lo)
                ph->lo = t;
            ph->hi = t + 1;
        }
    }
    return fits && sum_hi * 32768 <= INT32_MAX && sum_lo * 32768 <= INT32_MAX;
}

static PyObject *
native_upsample2x(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer phases, history, samples;
    int frac_bits;
    PyObject *out = NULL, *state = NULL, *result = NULL;
    int16_t *buf = NULL;
    void *scratch = NULL;

    if (!PyArg_ParseTuple(args, "y*iy*y*", &phases, &frac_bits, &history, &samples))
        return NULL;

    if (phases.len <= 0 || phases.len % (2 * (Py_ssize_t)sizeof(int32_t)) != 0) {
        PyErr_SetString(PyExc_ValueError, "phases must hold 2*K int32 taps");
        goto done;
    }
    if (history.len % 2 != 0 || samples.len % 2 != 0) {
        PyErr_SetString(PyExc_ValueError, "history and samples must hold int16 samples");
        goto done;
    }
    if (frac_bits < 1 || frac_bits > 48) {
        PyErr_SetString(PyExc_ValueError, "frac_bits must be in 1..48");
        goto done;
    }

    Py_ssize_t K = phases.len / (2 * (Py_ssize_t)sizeof(int32_t));
    Py_ssize_t n_hist = history.len / 2, n_in = samples.len / 2;
    Py_ssize_t total = n_hist + n_in;
    Py_ssize_t n = total - (K - 1);
    if (n < 0)
        n = 0;

    buf = PyMem_Malloc((size_t)(total > 0 ? total : 1) * sizeof(int16_t));
    scratch = PyMem_Malloc((size_t)(2 * K) * (sizeof(int32_t) + 2 * sizeof(int16_t)));
    if (buf == NULL || scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (n_hist)
        memcpy(buf, history.buf, (size_t)history.len);
    if (n_in)
        memcpy(buf + n_hist, samples.buf, (size_t)samples.len);

    phase_t ph[2];
    int fast = 1;
    for (int p = 0; p < 2; p++) {
        ph[p].taps = (int32_t *)scratch + p * K;
        ph[p].taps_hi = (int16_t *)((int32_t *)scratch + 2 * K) + p * K;
        ph[p].taps_lo = (int16_t *)((int32_t *)scratch + 2 * K) + (2 + p) * K;
        fast &= prepare_phase(&ph[p], (const int32_t *)phases.buf + p * K, K);
    }

    out = PyByteArray_FromStringAndSize(NULL, n * 2 * (Py_ssize_t)sizeof(int16_t));
    if (out == NULL)
        goto done;
    int16_t *dst = (int16_t *)PyByteArray_AS_STRING(out);
    const int64_t round = (int64_t)1 << (frac_bits - 1);

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < n; j++) {
        const int16_t *window = buf + j;
        for (int p = 0; p < 2; p++) {
            int64_t acc = round;
            if (fast) {
                const int16_t *h = ph[p].taps_hi, *l = ph[p].taps_lo;
                int32_t sum_hi = 0, sum_lo = 0;
                for (Py_ssize_t t = ph[p].lo; t < ph[p].hi; t++) {
                    sum_hi += (int32_t)h[t] * window[t];
                    sum_lo += (int32_t)l[t] * window[t];
                }
                acc += (int64_t)sum_hi * 2048 + sum_lo;
            } else {
                const int32_t *r = ph[p].taps;
                for (Py_ssize_t t = ph[p].lo; t < ph[p].hi; t++)
                    acc += (int64_t)r[t] * window[t];
            }
            dst[2 * j + p] = saturate16(floor_shift(acc, frac_bits));
        }
    }
    Py_END_ALLOW_THREADS

    state = PyBytes_FromStringAndSize((const char *)(buf + n),
                                      (total - n) * (Py_ssize_t)sizeof(int16_t));
    if (state == NULL)
        goto done;
    result = PyTuple_Pack(2, out, state);

done:
    Py_XDECREF(out);
    Py_XDECREF(state);
    PyMem_Free(buf);
    PyMem_Free(scratch);
    PyBuffer_Release(&phases);
    PyBuffer_Release(&history);
    PyBuffer_Release(&samples);
    return result;
}

/* ---- module ------------------------------------------------------------ */

static PyMethodDef native_methods[] = {
    {"decode_alaw", native_decode_alaw, METH_VARARGS,
     "decode_alaw(payload) -> bytearray of native-order int16 samples."},
    {"decode_ulaw", native_decode_ulaw, METH_VARARGS,
     "decode_ulaw(payload) -> bytearray of native-order int16 samples."},
    {"upsample2x", native_upsample2x, METH_VARARGS,
     "upsample2x(phases, frac_bits, history, samples) -> (out, new_history).\n\n"
     "phases: int32[2, K] polyphase taps in Q<frac_bits>; history, samples:\n"
     "int16.  Produces an output pair for every sample of history+samples\n"
     "with K-1 samples before it; the last K-1 samples (or all, if fewer)\n"
     "are returned as the new history."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    "rtp2ws._native",
    "C twins of rtp2ws.g711 decoding and the rtp2ws.resample interpolator.",
    -1,
    native_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    build_g711_tables();
    return PyModule_Create(&native_module);
}
