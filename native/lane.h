/*
 * rtp2ws._wsframe.Lane (native/lane.c): the C twin of rtp2ws.ws.lane.LanePy, one
 * stream's data plane: the outbox the fast path puts a bound leg's frames in
 * (lane_push, no Python per frame), and what the sender's flush needs to write
 * them (the live connection's wire, websockets' protocol and asyncio's
 * transport), so that send_batches (native/wire.c) takes, checks and writes a
 * tick's lanes in one call.  rtp2ws/ws/lane.py is the reference twin and says
 * what each field means.
 *
 * _fastpath reaches lane_push through the capsule rtp2ws._wsframe._lane_api
 * (lane_api_t), so that the two extensions share no symbols.
 */
#ifndef RTP2WS_LANE_H
#define RTP2WS_LANE_H

#include <Python.h>
#include <stdint.h>

typedef struct {
    PyObject_HEAD
    PyObject *outbox;         /* its stream's rtp2ws._wsframe.Outbox */
    PyObject *marked;         /* the sender's list of lanes with news (a list) */
    PyObject *owner;          /* the sender's Stream, or None once it is done */
    PyObject *wire;           /* while live over plain TCP: its Wire; else NULL */
    PyObject *protocol;       /* while live: websockets' protocol (its _state is read) */
    PyObject *transport;      /* while live: asyncio's transport (is_closing) */
    PyObject *open_state;     /* websockets' State.OPEN */
    PyObject *stamps;         /* None, or a list: (first, end, newest, held, packet) per push */
    int live;                 /* between go_live and go_dead */
    int dirty;                /* in marked since the last flush */
    long long pushed;         /* samples (per channel) the fast path pushed */
} lane_obj;

#define LANE_API_VERSION 1

typedef struct {
    int version;
    /* 1 if o is an rtp2ws._wsframe.Lane */
    int (*check)(PyObject *o);
    /* Lane.push(pcm, newest, held, packet) without making a bytes object: 0, or -1 with
       a Python exception set. */
    int (*push)(PyObject *lane, const uint8_t *pcm, Py_ssize_t n, double newest, Py_ssize_t held,
                Py_ssize_t packet);
} lane_api_t;

/* Add Lane and the capsule _lane_api to module m; -1 on error. */
int lane_module_init(PyObject *m);

/* Whether o is a Lane (exactly). */
int lane_check(PyObject *o);

#endif
