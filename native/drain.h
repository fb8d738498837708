/*
 * rtp2ws._wsframe.Drain and DrainWalker (native/drain.c): the C twin of the
 * bench's discard sink once a connection's handshake is done
 * (rtp2ws.bench.discard.WalkerPy walks the same frames in Python).
 */
#ifndef RTP2WS_DRAIN_H
#define RTP2WS_DRAIN_H

#include <Python.h>

/* Add Drain and DrainWalker to module m; -1 on error. */
int drain_module_init(PyObject *m);

#endif
