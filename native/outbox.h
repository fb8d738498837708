/*
 * rtp2ws._wsframe.Outbox: the C twin of rtp2ws.ws.outbox.Outbox (one stream's
 * queue toward the server), and the C-level entry the data plane uses: audio
 * in (ob_push), RFC 6455 client frames out (ob_take_framed), no Python object
 * made per frame.  native/outbox.c says how it stores audio and what a stream
 * costs.
 *
 * Every function here is called with the GIL held: the chunk pool is shared by
 * all outboxes of the process, and the rare log lines (dropping starts/stops)
 * and errors go through Python.
 */
#ifndef RTP2WS_OUTBOX_H
#define RTP2WS_OUTBOX_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ob_outbox ob_outbox;    /* the object behind rtp2ws._wsframe.Outbox */

/* Add the Outbox and Totals types (and chunk_counts) to module m; -1 on error. */
int ob_module_init(PyObject *m);

/* Outbox.push_audio: queue nbytes of int16 LE PCM (channels interleaved) at the
   next offset.  1 queued, 0 not (empty, after end, or abandoned: only counted),
   -1 with a Python exception set (not a whole number of samples, no memory). */
int ob_push(ob_outbox *ob, const uint8_t *pcm, size_t nbytes);

/* What ob_take_framed(ob, budget, ...) would write, without taking anything:
   its frames (each needs a 4-byte key), its bytes and whether an
   acknowledgement ping ends it (counted in both). */
typedef struct {
    int64_t frames;
    size_t bytes;
    int ping;
} ob_plan_t;
void ob_plan(const ob_outbox *ob, int64_t budget, ob_plan_t *plan);

/* Outbox.take(budget) (events and audio in stream order, a drop message
   before audio after a gap unless announce_gaps is off) written as masked client frames into out: text
   frames for events and drop messages, binary frames cut every frame_samples,
   then the acknowledgement ping when one is due (Outbox.ping_due), as the
   sender writes them.  keys: 4 bytes per frame in order.  It stops before a
   message (with its drop message) whose frames do not fit in cap or in the
   keys left, and leaves the ping for a later take if it does not fit; with
   cap and keys of ob_plan's size the result is exactly take + encode + ping.
   Returns the bytes written (frames in *frames if not NULL), or -1 with a
   Python exception set. */
Py_ssize_t ob_take_framed(ob_outbox *ob, int64_t budget, uint8_t *out, size_t cap,
                          const uint8_t *keys, size_t nkeys, int64_t *frames);

/* For callers outside outbox.c (native/wire.c's send_batches, native/lane.c): */

/* Outbox.offset: samples (per channel) pushed so far. */
long long ob_offset(const ob_outbox *ob);

/* Whether o is an rtp2ws._wsframe.Outbox (exactly). */
int ob_check(PyObject *o);

/* ob_plan, but 0, or -1 with a Python exception set (the drop message could
   not be made) instead of frames = -1. */
int ob_plan_checked(ob_outbox *ob, int64_t budget, ob_plan_t *plan);

/* What the sender looks at after a take: Outbox.pending, .ended, and whether
   .sent is set (the latency probe's (first, end), left for the caller). */
typedef struct {
    int pending, ended, sent;
} ob_state_t;
void ob_state(const ob_outbox *ob, ob_state_t *state);

/* take_framed(keys, budget) whose key source failed: what would have been
   taken is taken and lost, the ping marked due, as Outbox.take_framed does;
   the exception set stays set.  Returns -1. */
int ob_lose_take(ob_outbox *ob, int64_t budget);

#endif
