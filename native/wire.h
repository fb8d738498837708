/*
 * rtp2ws._wsframe.Wire and send_batches (native/wire.c): the C twins of
 * rtp2ws.ws.wire.Wire (one plain-TCP connection's write side) and of
 * rtp2ws.ws.wire.send_batches_py (every ready stream's batch taken from its
 * outbox, framed and written to its wire in one call).
 */
#ifndef RTP2WS_WIRE_H
#define RTP2WS_WIRE_H

#include <Python.h>

/* Add Wire, send_batches and the attention flags to module m; -1 on error. */
int wire_module_init(PyObject *m);

#endif
