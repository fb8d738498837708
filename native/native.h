/*
 * The parts of the rtp2ws._native extension module, one C file per Python twin:
 *
 *   native/g711.c      rtp2ws.codec.g711      decode_alaw, decode_ulaw
 *   native/resample.c  rtp2ws.codec.resample  upsample2x (and simd_levels, get_simd, set_simd)
 *
 * native/_native.c makes the module of them.  Each part gives its functions
 * and what to do at import.
 */
#ifndef RTP2WS_NATIVE_H
#define RTP2WS_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

extern PyMethodDef rtp2ws_g711_methods[];
void rtp2ws_g711_init(void);

extern PyMethodDef rtp2ws_resample_methods[];
int rtp2ws_resample_init(void);       /* 0, or -1 with an exception set */

/* The 2x filter for other C files (the fast path streams legs with it): see resample.c. */
int rtp2ws_upsample2x(const void *phases, Py_ssize_t K, int frac_bits, const int16_t *hist, Py_ssize_t n_hist,
                      const int16_t *x, Py_ssize_t nx, int16_t *out, Py_ssize_t *n_out, int16_t *new_hist,
                      Py_ssize_t *n_new_hist);

#endif
