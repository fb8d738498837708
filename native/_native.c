/*
 * rtp2ws._native: C twins of the codec hot loops, one C file per Python twin
 * (native/native.h lists them), gathered into one extension module.
 *
 *   native/g711.c      rtp2ws.codec.g711      decode_alaw, decode_ulaw
 *   native/resample.c  rtp2ws.codec.resample  upsample2x, simd_levels, get_simd, set_simd
 *
 * rtp2ws.speedups picks the module (or the numpy twins); see rtp2ws/_native.pyi.
 */
#include "native.h"

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    "rtp2ws._native",
    "C twins of rtp2ws.codec.g711 decoding and the rtp2ws.codec.resample interpolator.",
    -1,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    rtp2ws_g711_init();
    if (rtp2ws_resample_init() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddFunctions(m, rtp2ws_g711_methods) < 0
        || PyModule_AddFunctions(m, rtp2ws_resample_methods) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
