/*
 * rtp2ws._wsframe.Outbox and Totals: the C twins of rtp2ws.ws.outbox.Outbox
 * and Totals (one stream's queue toward the server, sans I/O), with the same
 * constructor, methods, attributes, log lines (logger "rtp2ws.sender") and
 * counts; rtp2ws/ws/outbox.py is the reference twin and says what every
 * method means.  The same tests run against both, and a differential test and
 * fuzz target (fuzz/targets/outbox.py) drive both with the same calls.
 *
 * Beyond the Python API there is a C-level entry for the data plane
 * (outbox.h): ob_push moves PCM into the queue and ob_take_framed writes what
 * take() would hand out as masked RFC 6455 client frames straight into a
 * caller's buffer (native/wsframe.h makes the headers and masks), with no
 * Python object made per frame.  take_framed(keys, budget) exposes it to
 * Python so that the tests compare its bytes with the Python twin's
 * take + ws.frame.encode + ping.
 *
 * Storage, memory proportional to what is held.  Audio is kept in chunks of
 * CHUNK_BYTES (1 KiB) taken from one free list shared by every outbox of the
 * process (at most POOL_KEEP chunks, or an eighth of those in use, stay on it; more go back to malloc).  An
 * outbox has four chunk FIFOs: the queue's runs (16-byte records: offset,
 * samples) and their PCM packed one after the other, and the same two for the
 * resend window; take() copies a run's PCM from the queue's FIFO to the
 * window's (a memcpy of 640 bytes per 20 ms mono frame).  Events are one
 * malloc'd block each (their UTF-8 text and position), the drop message's JSON
 * is a template made once by protocol.encode.
 *
 * What a stream costs: the object (496 bytes with its GC header) + its ident
 * dict (~180) + the drop template (~90): about 770 bytes with nothing queued
 * and no chunk (the Python twin: about 3.9 KB), and ~130 bytes more once it
 * has made a drop message.  Audio held costs its bytes rounded up to whole
 * chunks per FIFO (at most 2 KiB of slack per FIFO, 8 bytes of link per
 * chunk), run records 16 bytes per push (1 KiB per 64 pushes).  A mono stream
 * at the defaults keeps at most 1 s in the resend window (32,000 bytes: 32
 * chunks) and usually a frame queued, so a call's two streams hold about
 * 70 KiB at most with a server that keeps up, under the 100 KiB the data
 * plane has per call.
 *
 * All of it runs with the GIL held (outbox.h).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "outbox.h"
#include "wsframe.h"

#define DEFAULT_SAMPLE_RATE 16000
#define MAX_EVENTS 1000
#define DEFAULT_FRAME_MS 20
#define ACK_MIN_MS 500
#define CLOSE_NORMAL 1000
#define CLOSE_NO_STATUS 1005

#define CHUNK_BYTES 1024
#define POOL_KEEP 256

/* ------------------------------------------------------------------ chunks */

typedef struct chunk {
    struct chunk *next;
    uint8_t data[CHUNK_BYTES];
} chunk;

static chunk *pool;                 /* the free list, shared by every outbox */
static Py_ssize_t pool_free;        /* chunks on it */
static Py_ssize_t chunks_used;      /* chunks holding data, in all outboxes */

/* Make sure k chunks are on the free list, so that what follows cannot fail. */
static int
pool_reserve(size_t k)
{
    while ((size_t)pool_free < k) {
        chunk *c = malloc(sizeof(chunk));
        if (c == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->next = pool;
        pool = c;
        pool_free++;
    }
    return 0;
}

static chunk *
chunk_get(void)
{
    chunk *c = pool;              /* reserved beforehand */
    pool = c->next;
    pool_free--;
    chunks_used++;
    c->next = NULL;
    return c;
}

static void
chunk_put(chunk *c)
{
    chunks_used--;
    /* keep what the next pushes will take again: acknowledgements free chunks in bursts
       (every stream twice a second, and streams opened together pong together), and an
       eighth of those in use left glibc's malloc and free at 4 % of the process at 20 ms
       frames (perf, 400 calls); half of them, at least POOL_KEEP.  Memory held is no more
       than before: free() keeps the chunks in glibc's heap, not the process's. */
    if (pool_free < POOL_KEEP || pool_free < chunks_used / 2) {
        c->next = pool;
        pool = c;
        pool_free++;
    }
    else {
        free(c);
    }
}

/* A FIFO of bytes in chunks: data from head[start] to tail[end). */
typedef struct {
    chunk *head, *tail;
    size_t start, end, len;
} fifo;

/* Chunks an append of n bytes needs from the pool. */
static size_t
fifo_need(const fifo *f, size_t n)
{
    size_t room = f->tail != NULL ? CHUNK_BYTES - f->end : 0;
    return n <= room ? 0 : (n - room + CHUNK_BYTES - 1) / CHUNK_BYTES;
}

static void
fifo_append(fifo *f, const uint8_t *src, size_t n)
{
    while (n) {
        if (f->tail == NULL || f->end == CHUNK_BYTES) {
            chunk *c = chunk_get();
            if (f->tail != NULL)
                f->tail->next = c;
            else {
                f->head = c;
                f->start = 0;
            }
            f->tail = c;
            f->end = 0;
        }
        size_t k = CHUNK_BYTES - f->end;
        if (k > n)
            k = n;
        memcpy(f->tail->data + f->end, src, k);
        f->end += k;
        f->len += k;
        src += k;
        n -= k;
    }
}

static void
fifo_drop(fifo *f, size_t n)
{
    f->len -= n;
    while (n && f->head != NULL) {
        size_t avail = (f->head == f->tail ? f->end : CHUNK_BYTES) - f->start;
        if (n < avail) {
            f->start += n;
            break;
        }
        n -= avail;
        chunk *c = f->head;
        f->head = c->next;
        f->start = 0;
        chunk_put(c);
        if (f->head == NULL) {
            f->tail = NULL;
            f->end = 0;
        }
    }
    if (f->len == 0 && f->head != NULL) {   /* nothing left in a chunk still held */
        chunk_put(f->head);
        f->head = f->tail = NULL;
        f->start = f->end = 0;
    }
}

static void
fifo_clear(fifo *f)
{
    fifo_drop(f, f->len);
}

/* Reading a FIFO from its front, piece by contiguous piece. */
typedef struct {
    const fifo *f;
    chunk *c;
    size_t pos;
} cursor;

static void
cur_init(cursor *k, const fifo *f)
{
    k->f = f;
    k->c = f->head;
    k->pos = f->start;
}

/* The next contiguous piece of at most n bytes (n > 0, that many are left). */
static const uint8_t *
cur_next(cursor *k, size_t n, size_t *got)
{
    size_t avail = (k->c == k->f->tail ? k->f->end : CHUNK_BYTES) - k->pos;
    if (avail == 0) {
        k->c = k->c->next;
        k->pos = 0;
        avail = k->c == k->f->tail ? k->f->end : CHUNK_BYTES;
    }
    size_t g = n < avail ? n : avail;
    const uint8_t *p = k->c->data + k->pos;
    k->pos += g;
    *got = g;
    return p;
}

static void
cur_copy(cursor *k, uint8_t *dst, size_t n)
{
    while (n) {
        size_t got;
        const uint8_t *p = cur_next(k, n, &got);
        memcpy(dst, p, got);
        dst += got;
        n -= got;
    }
}

/* Runs: 16-byte records in a FIFO (CHUNK_BYTES is a multiple of 16, so a
   record never straddles two chunks). */
typedef struct {
    int64_t off;
    int64_t n;
} run;

static run *
runs_front(const fifo *f)
{
    return f->len ? (run *)(f->head->data + f->start) : NULL;
}

static const run *
cur_run(cursor *k)
{
    size_t got;
    return (const run *)cur_next(k, sizeof(run), &got);
}

#define NRUNS(f) ((f)->len / sizeof(run))

/* ------------------------------------------------------------------ events */

typedef struct event {
    struct event *next;
    int64_t pos;              /* stream position (the offset it goes before) */
    Py_ssize_t nchars;        /* len() of the Python str: what take's budget counts */
    size_t len;               /* UTF-8 bytes */
    char text[];
} event;

/* ------------------------------------------------------------------ Python helpers */

static PyObject *logger;        /* logging.getLogger("rtp2ws.sender") */
static PyObject *py_encode;     /* rtp2ws.ws.protocol.encode */
static PyObject *ack_codes;     /* frozenset({1000, 1005}) */

static int
load_helpers(void)
{
    if (py_encode == NULL) {
        PyObject *mod = PyImport_ImportModule("rtp2ws.ws.protocol");
        if (mod == NULL)
            return -1;
        py_encode = PyObject_GetAttrString(mod, "encode");
        Py_DECREF(mod);
        if (py_encode == NULL)
            return -1;
    }
    if (logger == NULL) {
        PyObject *mod = PyImport_ImportModule("logging");
        if (mod == NULL)
            return -1;
        logger = PyObject_CallMethod(mod, "getLogger", "s", "rtp2ws.sender");
        Py_DECREF(mod);
        if (logger == NULL)
            return -1;
    }
    return 0;
}

/* logger.warning(fmt, *args, extra=extra), args built by Py_BuildValue(argfmt, ...);
   extra: the outbox's ident (call_id, tag, stream_id), as the Python twin logs it. */
static int
warn(PyObject *extra, const char *fmt, const char *argfmt, ...)
{
    va_list va;
    va_start(va, argfmt);
    PyObject *rest = Py_VaBuildValue(argfmt, va);
    va_end(va);
    if (rest == NULL)
        return -1;
    PyObject *head = Py_BuildValue("(s)", fmt);
    PyObject *args = head != NULL ? PySequence_Concat(head, rest) : NULL;
    Py_XDECREF(head);
    Py_DECREF(rest);
    if (args == NULL)
        return -1;
    PyObject *kwargs = Py_BuildValue("{s:O}", "extra", extra);
    PyObject *method = kwargs != NULL ? PyObject_GetAttrString(logger, "warning") : NULL;
    PyObject *r = method != NULL ? PyObject_Call(method, args, kwargs) : NULL;
    Py_XDECREF(method);
    Py_XDECREF(kwargs);
    Py_DECREF(args);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* ------------------------------------------------------------------ Totals */

typedef struct {
    PyObject_HEAD
    long long dropped_events;
    long long dropped_samples;
    long long sent_bytes;
    long long sent_frames;
    long long undelivered_samples;
} totals_obj;

enum { T_DROPPED_EVENTS, T_DROPPED_SAMPLES, T_SENT_BYTES, T_SENT_FRAMES, T_UNDELIVERED_SAMPLES, T_COUNT };

static const char *const totals_names[T_COUNT] = {
    "dropped_events", "dropped_samples", "sent_bytes", "sent_frames", "undelivered_samples",
};
static const Py_ssize_t totals_offsets[T_COUNT] = {
    offsetof(totals_obj, dropped_events), offsetof(totals_obj, dropped_samples),
    offsetof(totals_obj, sent_bytes), offsetof(totals_obj, sent_frames),
    offsetof(totals_obj, undelivered_samples),
};

static PyTypeObject TotalsType;

static PyObject *
totals_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) || (kwargs != NULL && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "Totals() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

static PyObject *
totals_repr(totals_obj *self)
{
    return PyUnicode_FromFormat("Totals(dropped_events=%lld, dropped_samples=%lld, sent_bytes=%lld, "
                                "sent_frames=%lld, undelivered_samples=%lld)",
                                self->dropped_events, self->dropped_samples, self->sent_bytes,
                                self->sent_frames, self->undelivered_samples);
}

static PyMemberDef totals_members[] = {
    {"dropped_events", T_LONGLONG, offsetof(totals_obj, dropped_events), 0, "events dropped (queue full)"},
    {"dropped_samples", T_LONGLONG, offsetof(totals_obj, dropped_samples), 0, "samples dropped, never sent"},
    {"sent_bytes", T_LONGLONG, offsetof(totals_obj, sent_bytes), 0, "audio bytes written"},
    {"sent_frames", T_LONGLONG, offsetof(totals_obj, sent_frames), 0,
     "audio messages written, each resent one counted again"},
    {"undelivered_samples", T_LONGLONG, offsetof(totals_obj, undelivered_samples), 0,
     "samples sent and never acknowledged"},
    {NULL},
};

static PyTypeObject TotalsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rtp2ws._wsframe.Totals",
    .tp_basicsize = sizeof(totals_obj),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Counters summed over every outbox that shares it (the sender's statistics).",
    .tp_new = totals_new,
    .tp_repr = (reprfunc)totals_repr,
    .tp_members = totals_members,
};

/* totals.<field> += n: in place for a C Totals, through getattr/setattr for any other. */
static int
totals_add(PyObject *totals, int field, int64_t n)
{
    if (Py_IS_TYPE(totals, &TotalsType)) {
        *(long long *)((char *)totals + totals_offsets[field]) += n;
        return 0;
    }
    PyObject *v = PyObject_GetAttrString(totals, totals_names[field]);
    if (v == NULL)
        return -1;
    PyObject *d = PyLong_FromLongLong(n);
    PyObject *s = d != NULL ? PyNumber_InPlaceAdd(v, d) : NULL;
    Py_DECREF(v);
    Py_XDECREF(d);
    if (s == NULL)
        return -1;
    int r = PyObject_SetAttrString(totals, totals_names[field], s);
    Py_DECREF(s);
    return r;
}

/* ------------------------------------------------------------------ Outbox */

struct ob_outbox {
    PyObject_HEAD
    PyObject *ident;          /* dict: call_id, tag, stream_id */
    PyObject *stream_id;
    PyObject *totals;
    PyObject *end;            /* the end message (dict) once end() was called, else NULL */
    int channels, sample_bytes;
    long long sample_rate, samples_per_ms;
    char started, ended, closed, note_sent, dropping, has_ping, has_sent;
    char announce_gaps;       /* a drop message before audio after a gap (else only counted) */
    long long frame_bytes, frame_samples;
    long long max_buffer_ms, resend_ms, max_samples, resend_samples, ping_every;
    long long offset, dropped_samples, dropped_events, sent_samples, acknowledged, undelivered_samples;
    long long queued_samples, retained_samples;
    long long unkept, unkept_end;
    long long resume_at;      /* Outbox.resume_at: where a resumed connection starts */
    long long ping_at, expected;
    long long sent_first, sent_end;
    long long gap_dropped;
    fifo qruns, qdata;        /* unsent */
    fifo rruns, rdata;        /* sent, not acknowledged: the resend window */
    event *ev_head, *ev_tail;
    Py_ssize_t nevents;
    /* the drop message: tpl with the offset at tpl[at[0]], the samples at tpl[at[1]]
       (markers of mlen bytes); NULL when protocol.encode did not give a usable one */
    char *tpl;
    size_t tpl_len, at[2], mlen;
    int swapped;              /* samples come before offset in the template */
    char *drop_buf;           /* scratch for one drop message, from the first one on */
};

static PyTypeObject OutboxType;

#define MARK_OFFSET 8070450532247928831LL
#define MARK_SAMPLES 8070450532247928813LL
#define MARK_LEN 19

static const char *
find_once(const char *s, size_t n, const char *mark, size_t mlen)
{
    const char *hit = NULL;
    for (size_t i = 0; i + mlen <= n; i++) {
        if (memcmp(s + i, mark, mlen) == 0) {
            if (hit != NULL)
                return NULL;
            hit = s + i;
        }
    }
    return hit;
}

/* dict(ident, type="drop", offset=off, samples=samples) (protocol.encode's input) */
static PyObject *
drop_dict(ob_outbox *ob, PyObject *off, PyObject *samples)
{
    PyObject *d = PyDict_Copy(ob->ident);
    if (d == NULL)
        return NULL;
    PyObject *drop = PyUnicode_FromString("drop");
    if (drop == NULL || PyDict_SetItemString(d, "type", drop) < 0 || PyDict_SetItemString(d, "offset", off) < 0
        || PyDict_SetItemString(d, "samples", samples) < 0) {
        Py_XDECREF(drop);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(drop);
    return d;
}

static PyObject *
drop_str_py(ob_outbox *ob, long long off, long long samples)
{
    PyObject *o = PyLong_FromLongLong(off), *s = PyLong_FromLongLong(samples);
    PyObject *d = o != NULL && s != NULL ? drop_dict(ob, o, s) : NULL;
    Py_XDECREF(o);
    Py_XDECREF(s);
    if (d == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg(py_encode, d);
    Py_DECREF(d);
    return r;
}

/* Make the template; without one (an ident protocol.encode rejects, or whose
   text holds a marker) drop messages are made by protocol.encode each time. */
static int
make_template(ob_outbox *ob)
{
    PyObject *text = drop_str_py(ob, MARK_OFFSET, MARK_SAMPLES);
    if (text == NULL) {
        PyErr_Clear();          /* the same error comes again with each drop message */
        return 0;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    if (s == NULL) {
        Py_DECREF(text);
        return -1;
    }
    char mo[24], ms_[24];
    snprintf(mo, sizeof mo, "%lld", MARK_OFFSET);
    snprintf(ms_, sizeof ms_, "%lld", MARK_SAMPLES);
    const char *a = find_once(s, (size_t)n, mo, MARK_LEN), *b = find_once(s, (size_t)n, ms_, MARK_LEN);
    if (a != NULL && b != NULL) {
        ob->tpl = PyMem_Malloc((size_t)n + 1);
        if (ob->tpl == NULL) {
            Py_DECREF(text);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(ob->tpl, s, (size_t)n + 1);
        ob->tpl_len = (size_t)n;
        ob->mlen = MARK_LEN;
        ob->swapped = b < a;
        ob->at[0] = (size_t)((ob->swapped ? b : a) - s);
        ob->at[1] = (size_t)((ob->swapped ? a : b) - s);
    }
    Py_DECREF(text);
    return 0;
}

static size_t
digits(long long v)
{
    char buf[24];
    return (size_t)snprintf(buf, sizeof buf, "%lld", v);
}

/* The drop message's UTF-8 text: from the template into drop_buf, or from
   protocol.encode (then *hold owns it).  NULL with an exception on error. */
static const char *
drop_utf8(ob_outbox *ob, long long off, long long samples, size_t *len, PyObject **hold)
{
    *hold = NULL;
    if (ob->tpl != NULL) {
        if (ob->drop_buf == NULL && (ob->drop_buf = PyMem_Malloc(ob->tpl_len + 48)) == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        long long first = ob->swapped ? samples : off, second = ob->swapped ? off : samples;
        char *p = ob->drop_buf;
        memcpy(p, ob->tpl, ob->at[0]);
        p += ob->at[0];
        p += sprintf(p, "%lld", first);
        size_t mid = ob->at[1] - ob->at[0] - ob->mlen;
        memcpy(p, ob->tpl + ob->at[0] + ob->mlen, mid);
        p += mid;
        p += sprintf(p, "%lld", second);
        size_t rest = ob->tpl_len - ob->at[1] - ob->mlen;
        memcpy(p, ob->tpl + ob->at[1] + ob->mlen, rest);
        p += rest;
        *len = (size_t)(p - ob->drop_buf);
        return ob->drop_buf;
    }
    PyObject *s = drop_str_py(ob, off, samples);
    if (s == NULL)
        return NULL;
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (u == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    *hold = s;
    *len = (size_t)n;
    return u;
}

/* The drop message as a new str. */
static PyObject *
drop_str_py_or_tpl(ob_outbox *ob, long long off, long long samples)
{
    size_t len;
    PyObject *hold;
    const char *u = drop_utf8(ob, off, samples, &len, &hold);
    if (u == NULL)
        return NULL;
    if (hold != NULL)
        return hold;
    return PyUnicode_DecodeUTF8(u, (Py_ssize_t)len, NULL);
}

/* Its length in bytes; -1 with an exception on error. */
static Py_ssize_t
drop_len(ob_outbox *ob, long long off, long long samples)
{
    if (ob->tpl != NULL)
        return (Py_ssize_t)(ob->tpl_len - 2 * ob->mlen + digits(off) + digits(samples));
    size_t len;
    PyObject *hold;
    if (drop_utf8(ob, off, samples, &len, &hold) == NULL)
        return -1;
    Py_DECREF(hold);
    return (Py_ssize_t)len;
}

/* Framed bytes of nb bytes of audio cut every split bytes. */
static size_t
audio_framed(size_t nb, size_t split)
{
    size_t whole = nb / split, rest = nb % split;
    return whole * (ws_header_len(split) + split) + (rest ? ws_header_len(rest) + rest : 0);
}

/* ---- counting and logging (Outbox._count_dropped etc.) */

static int
count_dropped(ob_outbox *ob, long long n)
{
    ob->dropped_samples += n;
    return n ? totals_add(ob->totals, T_DROPPED_SAMPLES, n) : 0;
}

static int
count_undelivered(ob_outbox *ob, long long n)
{
    ob->undelivered_samples += n;
    return n ? totals_add(ob->totals, T_UNDELIVERED_SAMPLES, n) : 0;
}

static int
dropping_stopped(ob_outbox *ob)
{
    ob->dropping = 0;
    int r = warn(ob->ident, "stream %s: stopped dropping audio; %d ms dropped (%d ms in total)", "(OLL)", ob->stream_id,
                 ob->gap_dropped / ob->samples_per_ms, ob->dropped_samples / ob->samples_per_ms);
    ob->gap_dropped = 0;
    return r;
}

/* Outbox._trim: whole messages off the front of (runs, data) until excess samples are gone;
   *end: the offset right after the last sample removed (0 if none). */
static long long
trim(ob_outbox *ob, fifo *runs, fifo *data, long long excess, long long *end)
{
    long long fs = ob->frame_samples, removed = 0;
    *end = 0;
    while (removed < excess && runs->len) {
        run *r = runs_front(runs);
        long long cut = (excess - removed + fs - 1) / fs * fs;
        if (cut >= r->n) {
            long long n = r->n;
            *end = r->off + n;
            fifo_drop(data, (size_t)(n * ob->frame_bytes));
            fifo_drop(runs, sizeof(run));
            removed += n;
        }
        else {
            fifo_drop(data, (size_t)(cut * ob->frame_bytes));
            r->off += cut;
            r->n -= cut;
            removed += cut;
            *end = r->off;
        }
    }
    return removed;
}

static int
drop_oldest(ob_outbox *ob)
{
    long long end;
    long long dropped = trim(ob, &ob->qruns, &ob->qdata, ob->queued_samples - ob->max_samples, &end);
    ob->queued_samples -= dropped;
    int r = count_dropped(ob, dropped);
    ob->gap_dropped += dropped;
    if (!ob->dropping) {
        ob->dropping = 1;
        if (warn(ob->ident, "stream %s: %d ms of audio queued (server slow or unreachable), dropping the oldest", "(OL)",
                 ob->stream_id, ob->max_buffer_ms) < 0)
            r = -1;
    }
    return r;
}

static void
unkeep(ob_outbox *ob, long long excess)
{
    long long end;
    long long removed = trim(ob, &ob->rruns, &ob->rdata, excess, &end);
    if (end > ob->resume_at)
        ob->resume_at = end;
    ob->retained_samples -= removed;
    ob->unkept += removed;
    ob->unkept_end = ob->rruns.len ? runs_front(&ob->rruns)->off : ob->expected;
}

static void
acknowledge(ob_outbox *ob, long long offset)
{
    if (offset <= ob->acknowledged)
        return;
    ob->acknowledged = offset;
    if (offset > ob->resume_at)
        ob->resume_at = offset;
    long long freed = 0;
    while (ob->rruns.len) {
        run *r = runs_front(&ob->rruns);
        if (r->off + r->n <= offset) {
            freed += r->n;
            fifo_drop(&ob->rdata, (size_t)(r->n * ob->frame_bytes));
            fifo_drop(&ob->rruns, sizeof(run));
            continue;
        }
        if (r->off < offset) {
            long long k = offset - r->off;
            fifo_drop(&ob->rdata, (size_t)(k * ob->frame_bytes));
            r->off = offset;
            r->n -= k;
            freed += k;
        }
        break;
    }
    ob->retained_samples -= freed;
    if (ob->unkept) {
        long long left = ob->unkept_end - offset;
        ob->unkept = offset >= ob->unkept_end ? 0 : (ob->unkept < left ? ob->unkept : left);
    }
}

static int
ping_due(ob_outbox *ob, long long *at)
{
    if (!ob->has_ping && ob->expected - ob->acknowledged >= ob->ping_every) {
        ob->has_ping = 1;
        ob->ping_at = ob->expected;
        *at = ob->ping_at;
        return 1;
    }
    return 0;
}

/* ---- the capture side */

long long
ob_offset(const ob_outbox *ob)
{
    return ob->offset;
}

int
ob_push(ob_outbox *ob, const uint8_t *pcm, size_t size)
{
    if (ob->ended)
        return 0;
    size_t fb = (size_t)ob->frame_bytes;
    size_t n = size / fb;
    if (n * fb != size) {
        PyErr_Format(PyExc_ValueError, "stream %S: %zd bytes is not a whole number of %d-channel %d-bit samples",
                     ob->stream_id, (Py_ssize_t)size, ob->channels, 8 * ob->sample_bytes);
        return -1;
    }
    if (!n)
        return 0;
    if (!ob->closed && pool_reserve(fifo_need(&ob->qruns, sizeof(run)) + fifo_need(&ob->qdata, size)) < 0)
        return -1;
    long long off = ob->offset;
    ob->offset = off + (long long)n;
    if (ob->closed)
        return count_dropped(ob, (long long)n) < 0 ? -1 : 0;
    run r = {off, (int64_t)n};
    fifo_append(&ob->qruns, (const uint8_t *)&r, sizeof r);
    fifo_append(&ob->qdata, pcm, size);
    ob->queued_samples += (long long)n;
    if (ob->queued_samples > ob->max_samples && drop_oldest(ob) < 0)
        return -1;
    return 1;
}

/* ---- taking: one loop for take() (messages into a list), take_framed and
   ob_take_framed (frames into a buffer), and ob_plan (counting only) */

typedef struct {
    PyObject *msgs;           /* take(): append str and bytes here */
    uint8_t *out;             /* framed: write here ... */
    size_t cap, used;         /* ... up to cap */
    const uint8_t *keys;
    size_t nkeys, kused;
} sink_t;

static int
append_msg(PyObject *msgs, PyObject *m)
{
    if (m == NULL)
        return -1;
    int r;
    if (PyList_CheckExact(msgs))
        r = PyList_Append(msgs, m);
    else {
        PyObject *x = PyObject_CallMethod(msgs, "append", "O", m);
        r = x == NULL ? -1 : 0;
        Py_XDECREF(x);
    }
    Py_DECREF(m);
    return r;
}

static void
put_text(sink_t *s, const char *text, size_t len)
{
    const uint8_t *key = s->keys + s->kused;
    s->kused += 4;
    uint8_t *out = ws_put_header(s->out + s->used, WS_OP_TEXT, len, key);
    out = ws_put_masked(out, (const uint8_t *)text, len, key);
    s->used = (size_t)(out - s->out);
}

static void
put_audio(sink_t *s, cursor *cur, size_t nb, size_t split)
{
    uint8_t *out = s->out + s->used;
    size_t pos = 0;
    do {
        size_t len = nb - pos < split ? nb - pos : split;
        const uint8_t *key = s->keys + s->kused;
        s->kused += 4;
        out = ws_put_header(out, WS_OP_BINARY, len, key);
        size_t done = 0;
        while (done < len) {
            size_t got;
            const uint8_t *p = cur_next(cur, len - done, &got);
            out = ws_put_masked_at(out, p, got, key, done);
            done += got;
        }
        pos += len;
    } while (pos < nb);
    s->used = (size_t)(out - s->out);
}

static PyObject *
run_bytes(cursor *cur, size_t nb)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)nb);
    if (b != NULL)
        cur_copy(cur, (uint8_t *)PyBytes_AS_STRING(b), nb);
    return b;
}

/* Outbox.take (both paths: the one-run shortcut, which ignores the budget, and
   the loop).  Returns frames + texts, or -1 with an exception (what was taken
   until then is accounted for). */
static long long
take_core(ob_outbox *ob, long long budget, sink_t *s)
{
    long long fs = ob->frame_samples, fb = ob->frame_bytes;
    size_t split = (size_t)(fs * fb);
    int one = ob->ev_head == NULL && NRUNS(&ob->qruns) == 1 && runs_front(&ob->qruns)->off == ob->expected
              && !ob->note_sent;
    long long expected = ob->expected, first = expected;
    long long frames = 0, size = 0, texts = 0, taken = 0;
    int err = 0;
    while (one || size < budget) {
        one = 0;
        event *e = ob->ev_head;
        run *r = runs_front(&ob->qruns);
        if (e != NULL && (r == NULL || e->pos <= r->off)) {
            if (s->msgs != NULL) {
                if (append_msg(s->msgs, PyUnicode_DecodeUTF8(e->text, (Py_ssize_t)e->len, NULL)) < 0) {
                    err = 1;
                    break;
                }
            }
            else {
                if (ws_header_len(e->len) + e->len > s->cap - s->used || s->nkeys - s->kused < 4)
                    break;
                put_text(s, e->text, e->len);
            }
            ob->ev_head = e->next;
            if (ob->ev_head == NULL)
                ob->ev_tail = NULL;
            ob->nevents--;
            texts++;
            size += e->nchars;
            PyMem_Free(e);
        }
        else if (r != NULL) {
            long long off = r->off, n = r->n;
            size_t nb = (size_t)(n * fb);
            const char *dt = NULL;
            size_t dl = 0;
            PyObject *hold = NULL;
            if (off > expected && ob->announce_gaps
                && (dt = drop_utf8(ob, off, off - expected, &dl, &hold)) == NULL) {
                err = 1;
                break;
            }
            if (pool_reserve(fifo_need(&ob->rruns, sizeof(run)) + fifo_need(&ob->rdata, nb)) < 0) {
                Py_XDECREF(hold);
                err = 1;
                break;
            }
            cursor cur;
            cur_init(&cur, &ob->qdata);
            if (s->msgs != NULL) {
                PyObject *audio = run_bytes(&cur, nb);
                PyObject *text = dt == NULL ? NULL : hold != NULL ? Py_NewRef(hold)
                                 : PyUnicode_DecodeUTF8(dt, (Py_ssize_t)dl, NULL);
                if (audio == NULL || (dt != NULL && text == NULL)) {
                    Py_XDECREF(audio);
                    Py_XDECREF(text);
                    Py_XDECREF(hold);
                    err = 1;
                    break;
                }
                if ((text != NULL && append_msg(s->msgs, text) < 0) || append_msg(s->msgs, audio) < 0) {
                    Py_XDECREF(hold);
                    err = 1;
                    break;
                }
            }
            else {
                size_t need = (dt != NULL ? ws_header_len(dl) + dl : 0) + audio_framed(nb, split);
                size_t nk = 4 * ((dt != NULL) + (size_t)((n + fs - 1) / fs));
                if (need > s->cap - s->used || nk > s->nkeys - s->kused) {
                    Py_XDECREF(hold);
                    break;
                }
                if (dt != NULL)
                    put_text(s, dt, dl);
                put_audio(s, &cur, nb, split);
            }
            Py_XDECREF(hold);
            if (!taken)
                first = off;
            if (dt != NULL)
                texts++;
            frames += (n + fs - 1) / fs;
            size += (long long)nb;
            taken += n;
            expected = off + n;
            /* the run enters the resend window */
            run moved = {off, n};
            fifo_append(&ob->rruns, (const uint8_t *)&moved, sizeof moved);
            cur_init(&cur, &ob->qdata);
            size_t left = nb;
            while (left) {
                size_t got;
                const uint8_t *p = cur_next(&cur, left, &got);
                fifo_append(&ob->rdata, p, got);
                left -= got;
            }
            fifo_drop(&ob->qdata, nb);
            fifo_drop(&ob->qruns, sizeof(run));
        }
        else {
            break;
        }
    }
    if (taken) {
        ob->expected = expected;
        ob->queued_samples -= taken;
        ob->sent_samples += taken;
        if (ob->dropping && ob->queued_samples <= ob->max_samples / 2 && dropping_stopped(ob) < 0)
            err = 1;
        if (totals_add(ob->totals, T_SENT_FRAMES, frames) < 0
            || totals_add(ob->totals, T_SENT_BYTES, taken * fb) < 0)
            err = 1;
        ob->retained_samples += taken;
        if (ob->retained_samples > ob->resend_samples)
            unkeep(ob, ob->retained_samples - ob->resend_samples);
        if (ob->note_sent) {
            ob->has_sent = 1;
            ob->sent_first = first;
            ob->sent_end = expected;
        }
    }
    return err ? -1 : frames + texts;
}

static int
plan_core(ob_outbox *ob, long long budget, ob_plan_t *plan)
{
    long long fs = ob->frame_samples, fb = ob->frame_bytes;
    size_t split = (size_t)(fs * fb);
    int one = ob->ev_head == NULL && NRUNS(&ob->qruns) == 1 && runs_front(&ob->qruns)->off == ob->expected
              && !ob->note_sent;
    long long expected = ob->expected, size = 0, frames = 0;
    size_t bytes = 0;
    const event *e = ob->ev_head;
    size_t nruns = NRUNS(&ob->qruns);
    cursor rc;
    cur_init(&rc, &ob->qruns);
    const run *r = nruns ? cur_run(&rc) : NULL;
    while (one || size < budget) {
        one = 0;
        if (e != NULL && (r == NULL || e->pos <= r->off)) {
            bytes += ws_header_len(e->len) + e->len;
            frames++;
            size += e->nchars;
            e = e->next;
        }
        else if (r != NULL) {
            if (r->off > expected && ob->announce_gaps) {
                Py_ssize_t dl = drop_len(ob, r->off, r->off - expected);
                if (dl < 0)
                    return -1;
                bytes += ws_header_len((size_t)dl) + (size_t)dl;
                frames++;
            }
            size_t nb = (size_t)(r->n * fb);
            bytes += audio_framed(nb, split);
            frames += (r->n + fs - 1) / fs;
            size += (long long)nb;
            expected = r->off + r->n;
            r = --nruns ? cur_run(&rc) : NULL;
        }
        else {
            break;
        }
    }
    plan->ping = frames && !ob->has_ping && expected - ob->acknowledged >= ob->ping_every;
    plan->frames = frames + plan->ping;
    plan->bytes = bytes + (plan->ping ? 14 : 0);
    return 0;
}

void
ob_plan(const ob_outbox *ob, int64_t budget, ob_plan_t *plan)
{
    if (plan_core((ob_outbox *)ob, budget, plan) < 0) {   /* only without a drop template */
        PyErr_Clear();
        plan->frames = -1;
        plan->bytes = 0;
        plan->ping = 0;
    }
}

Py_ssize_t
ob_take_framed(ob_outbox *ob, int64_t budget, uint8_t *out, size_t cap, const uint8_t *keys, size_t nkeys,
               int64_t *frames)
{
    sink_t s = {NULL, out, cap, 0, keys, nkeys, 0};
    long long n = take_core(ob, budget, &s);
    if (n < 0)
        return -1;
    long long at;
    if (n && cap - s.used >= 14 && nkeys - s.kused >= 4 && ping_due(ob, &at)) {
        uint8_t payload[8];
        for (int i = 0; i < 8; i++)
            payload[i] = (uint8_t)((unsigned long long)at >> (56 - 8 * i));
        const uint8_t *key = keys + s.kused;
        uint8_t *p = ws_put_header(out + s.used, WS_OP_PING, 8, key);
        ws_put_masked(p, payload, 8, key);
        s.used += 14;
        s.kused += 4;
        n++;
    }
    if (frames != NULL)
        *frames = n;
    return (Py_ssize_t)s.used;
}

int
ob_plan_checked(ob_outbox *ob, int64_t budget, ob_plan_t *plan)
{
    return plan_core(ob, budget, plan);
}

void
ob_state(const ob_outbox *ob, ob_state_t *state)
{
    state->pending = ob->qruns.len || ob->ev_head != NULL;
    state->ended = ob->ended;
    state->sent = ob->has_sent;
}

/* ---------------------------------------------------------------- the Python type */

static PyObject *
outbox_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"ident", "channels", "frame_ms", "max_buffer_ms", "resend_ms", "totals",
                             "announce_gaps", "sample_rate", "sample_bytes", NULL};
    PyObject *ident, *channels = NULL, *frame_ms = Py_None, *max_buffer_ms = NULL, *resend_ms = NULL;
    PyObject *totals = Py_None;
    int announce_gaps = 1;
    long long sample_rate = DEFAULT_SAMPLE_RATE;
    int sample_bytes = 2;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$OOOOOpLi:Outbox", kwlist, &ident, &channels, &frame_ms,
                                     &max_buffer_ms, &resend_ms, &totals, &announce_gaps, &sample_rate,
                                     &sample_bytes))
        return NULL;
    /* the stream's audio format (rtp2ws.codec.audioformat), as the Python twin checks it */
    if (sample_rate < 1000 || sample_rate % 1000 || (sample_bytes != 1 && sample_bytes != 2)) {
        PyErr_Format(PyExc_ValueError, "an outbox takes a whole number of kHz and 1 or 2 bytes a sample, "
                     "not %lld Hz and %d", sample_rate, sample_bytes);
        return NULL;
    }
    if (load_helpers() < 0)
        return NULL;
    ob_outbox *ob = (ob_outbox *)type->tp_alloc(type, 0);
    if (ob == NULL)
        return NULL;
    ob->ident = PyObject_CallOneArg((PyObject *)&PyDict_Type, ident);
    if (ob->ident == NULL)
        goto fail;
    PyObject *sid = PyDict_GetItemString(ob->ident, "stream_id");
    ob->stream_id = Py_NewRef(sid != NULL ? sid : Py_None);
    long ch = 1;
    if (channels != NULL) {
        ch = PyLong_AsLong(channels);
        if (ch == -1 && PyErr_Occurred())
            goto fail;
        if (ch < 1 || ch > 1 << 20) {
            PyErr_Format(PyExc_ValueError, "channels must be 1 or more, not %ld", ch);
            goto fail;
        }
    }
    ob->channels = (int)ch;
    ob->announce_gaps = (char)announce_gaps;
    ob->sample_rate = sample_rate;
    ob->sample_bytes = sample_bytes;
    const long long spm = ob->samples_per_ms = sample_rate / 1000;
    ob->frame_bytes = sample_bytes * ch;
    long long fms = DEFAULT_FRAME_MS;
    int truthy = PyObject_IsTrue(frame_ms);
    if (truthy < 0)
        goto fail;
    if (truthy) {
        PyObject *v = PyNumber_Long(frame_ms);
        if (v == NULL)
            goto fail;
        fms = PyLong_AsLongLong(v);
        Py_DECREF(v);
        if (fms == -1 && PyErr_Occurred())
            goto fail;
    }
    ob->frame_samples = (fms > 1 ? fms : 1) * spm;
    ob->max_buffer_ms = 10000;
    ob->resend_ms = 1000;
    if (max_buffer_ms != NULL && (ob->max_buffer_ms = PyLong_AsLongLong(max_buffer_ms)) == -1 && PyErr_Occurred())
        goto fail;
    if (resend_ms != NULL && (ob->resend_ms = PyLong_AsLongLong(resend_ms)) == -1 && PyErr_Occurred())
        goto fail;
    ob->max_samples = (ob->max_buffer_ms > 0 ? ob->max_buffer_ms : 0) * spm;
    ob->resend_samples = (ob->resend_ms > 0 ? ob->resend_ms : 0) * spm;
    ob->ping_every = ob->resend_samples / 2 > ACK_MIN_MS * spm ? ob->resend_samples / 2 : ACK_MIN_MS * spm;
    if (totals == Py_None)
        ob->totals = PyObject_CallNoArgs((PyObject *)&TotalsType);
    else
        ob->totals = Py_NewRef(totals);
    if (ob->totals == NULL)
        goto fail;
    if (ob->announce_gaps && make_template(ob) < 0)      /* no drop message, no template */
        goto fail;
    return (PyObject *)ob;
fail:
    Py_DECREF(ob);
    return NULL;
}

/* Everything is made by outbox_new; __init__ is there for the signature (the stub's). */
static int
outbox_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return 0;
}

static void
clear_data(ob_outbox *ob)
{
    fifo_clear(&ob->qruns);
    fifo_clear(&ob->qdata);
    fifo_clear(&ob->rruns);
    fifo_clear(&ob->rdata);
    while (ob->ev_head != NULL) {
        event *e = ob->ev_head;
        ob->ev_head = e->next;
        PyMem_Free(e);
    }
    ob->ev_tail = NULL;
    ob->nevents = 0;
}

static int
outbox_traverse(ob_outbox *ob, visitproc visit, void *arg)
{
    Py_VISIT(ob->ident);
    Py_VISIT(ob->stream_id);
    Py_VISIT(ob->totals);
    Py_VISIT(ob->end);
    return 0;
}

static int
outbox_clear(ob_outbox *ob)
{
    Py_CLEAR(ob->ident);
    Py_CLEAR(ob->stream_id);
    Py_CLEAR(ob->totals);
    Py_CLEAR(ob->end);
    return 0;
}

static void
outbox_dealloc(ob_outbox *ob)
{
    PyObject_GC_UnTrack(ob);
    outbox_clear(ob);
    clear_data(ob);
    PyMem_Free(ob->tpl);
    PyMem_Free(ob->drop_buf);
    Py_TYPE(ob)->tp_free((PyObject *)ob);
}

static PyObject *
outbox_repr(ob_outbox *ob)
{
    return PyUnicode_FromFormat("Outbox(%R, offset=%lld, queued=%lld, retained=%lld, acknowledged=%lld, "
                                "dropped=%lld)", ob->stream_id, ob->offset, ob->queued_samples,
                                ob->retained_samples, ob->acknowledged, ob->dropped_samples);
}

static PyObject *
outbox_push_audio(ob_outbox *ob, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"pcm", NULL};
    PyObject *pcm;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:push_audio", kwlist, &pcm))
        return NULL;
    if (ob->ended)
        Py_RETURN_FALSE;
    Py_buffer view;
    PyObject *copy = NULL;
    if (PyObject_GetBuffer(pcm, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();                       /* as bytes(pcm) makes of it */
        copy = PyObject_CallOneArg((PyObject *)&PyBytes_Type, pcm);
        if (copy == NULL)
            return NULL;
        if (PyObject_GetBuffer(copy, &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(copy);
            return NULL;
        }
    }
    int r = ob_push(ob, (const uint8_t *)view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    Py_XDECREF(copy);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
outbox_push_event(ob_outbox *ob, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"message", NULL};
    PyObject *message;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:push_event", kwlist, &message))
        return NULL;
    if (ob->ended || ob->closed)
        Py_RETURN_FALSE;
    if (ob->nevents >= MAX_EVENTS) {
        ob->dropped_events++;
        if (totals_add(ob->totals, T_DROPPED_EVENTS, 1) < 0)
            return NULL;
        if (ob->dropped_events == 1 && warn(ob->ident, "stream %s: more than %d events queued, dropping new ones", "(Oi)",
                                            ob->stream_id, MAX_EVENTS) < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    PyObject *text = PyObject_CallOneArg(py_encode, message);
    if (text == NULL)
        return NULL;
    Py_ssize_t len;
    const char *u = PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &len) : NULL;
    if (u == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "protocol.encode did not return a str");
        Py_DECREF(text);
        return NULL;
    }
    event *e = PyMem_Malloc(sizeof(event) + (size_t)len);
    if (e == NULL) {
        Py_DECREF(text);
        return PyErr_NoMemory();
    }
    e->next = NULL;
    e->pos = ob->offset;
    e->nchars = PyUnicode_GET_LENGTH(text);
    e->len = (size_t)len;
    memcpy(e->text, u, (size_t)len);
    Py_DECREF(text);
    if (ob->ev_tail != NULL)
        ob->ev_tail->next = e;
    else
        ob->ev_head = e;
    ob->ev_tail = e;
    ob->nevents++;
    Py_RETURN_TRUE;
}

static PyObject *
outbox_end(ob_outbox *ob, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"message", NULL};
    PyObject *message;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:end", kwlist, &message))
        return NULL;
    if (ob->ended)
        Py_RETURN_FALSE;
    PyObject *end = PyObject_CallOneArg((PyObject *)&PyDict_Type, message);
    if (end == NULL)
        return NULL;
    PyObject *type = PyUnicode_FromString("end");
    PyObject *key = PyUnicode_FromString("type");
    PyObject *got = type != NULL && key != NULL ? PyDict_SetDefault(end, key, type) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(key);
    if (got == NULL) {
        Py_DECREF(end);
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(ob->ident, &pos, &k, &v)) {
        if (PyDict_SetDefault(end, k, v) == NULL) {
            Py_DECREF(end);
            return NULL;
        }
    }
    Py_XSETREF(ob->end, end);
    ob->ended = 1;
    Py_RETURN_TRUE;
}

static PyObject *
outbox_connected(ob_outbox *ob, PyObject *Py_UNUSED(ignored))
{
    ob->has_ping = 0;
    int resumed = ob->started;
    ob->started = 1;
    if (!resumed)
        return Py_BuildValue("(Oi)", Py_False, 0);
    return Py_BuildValue("(OL)", Py_True, ob->resume_at);
}

static PyObject *
outbox_resend(ob_outbox *ob, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"msgs", "offset", NULL};
    PyObject *msgs;
    long long offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OL:resend", kwlist, &msgs, &offset))
        return NULL;
    long long fs = ob->frame_samples, expected = offset, frames = 0, audio_frames = 0, audio_bytes = 0;
    size_t nruns = NRUNS(&ob->rruns);
    cursor rc, dc;
    cur_init(&rc, &ob->rruns);
    cur_init(&dc, &ob->rdata);
    for (size_t i = 0; i < nruns; i++) {
        const run *r = cur_run(&rc);
        if (r->off > expected && ob->announce_gaps) {
            if (append_msg(msgs, drop_str_py_or_tpl(ob, r->off, r->off - expected)) < 0)
                return NULL;
            frames++;
        }
        size_t nb = (size_t)(r->n * ob->frame_bytes);
        if (append_msg(msgs, run_bytes(&dc, nb)) < 0)
            return NULL;
        long long k = (r->n + fs - 1) / fs;
        frames += k;
        audio_frames += k;
        audio_bytes += (long long)nb;
        expected = r->off + r->n;
    }
    ob->expected = expected;
    if (totals_add(ob->totals, T_SENT_FRAMES, audio_frames) < 0
        || totals_add(ob->totals, T_SENT_BYTES, audio_bytes) < 0)
        return NULL;
    return PyLong_FromLongLong(frames);
}

static PyObject *
outbox_take(ob_outbox *ob, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"msgs", "budget", NULL};
    PyObject *msgs;
    long long budget;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OL:take", kwlist, &msgs, &budget))
        return NULL;
    sink_t s = {msgs, NULL, 0, 0, NULL, 0, 0};
    long long n = take_core(ob, budget, &s);
    return n < 0 ? NULL : PyLong_FromLongLong(n);
}

/* take_framed without keys (the key source failed, or gave too few): the
   messages are taken and lost, and the ping is marked due, as the Python twin
   does before it finds out; the exception set stays. */
static PyObject *
lose_take(ob_outbox *ob, long long budget)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *msgs = PyList_New(0);
    if (msgs != NULL) {
        sink_t s = {msgs, NULL, 0, 0, NULL, 0, 0};
        long long at;
        if (take_core(ob, budget, &s) > 0)
            ping_due(ob, &at);
        Py_DECREF(msgs);
    }
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
    return NULL;
}

int
ob_lose_take(ob_outbox *ob, int64_t budget)
{
    lose_take(ob, budget);
    return -1;
}

int
ob_check(PyObject *o)
{
    return Py_IS_TYPE(o, &OutboxType);
}

static PyObject *
outbox_take_framed(ob_outbox *ob, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"keys", "budget", NULL};
    PyObject *keys;
    long long budget;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OL:take_framed", kwlist, &keys, &budget))
        return NULL;
    ob_plan_t plan;
    if (plan_core(ob, budget, &plan) < 0)
        return NULL;
    if (!plan.frames)
        return PyBytes_FromStringAndSize(NULL, 0);
    PyObject *kobj;
    Py_buffer kv;
    if (PyCallable_Check(keys))
        kobj = PyObject_CallFunction(keys, "L", (long long)(4 * plan.frames));
    else
        kobj = Py_NewRef(keys);
    if (kobj == NULL)
        return lose_take(ob, budget);
    if (PyObject_GetBuffer(kobj, &kv, PyBUF_SIMPLE) < 0) {
        Py_DECREF(kobj);
        return lose_take(ob, budget);
    }
    PyObject *result = NULL;
    if (kv.len < 4 * plan.frames) {
        PyErr_Format(PyExc_ValueError, "%lld frames need %lld mask key bytes, got %zd", (long long)plan.frames,
                     (long long)(4 * plan.frames), kv.len);
        PyBuffer_Release(&kv);
        Py_DECREF(kobj);
        return lose_take(ob, budget);
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)plan.bytes);
    if (result == NULL)
        goto done;
    int64_t frames;
    Py_ssize_t n = ob_take_framed(ob, budget, (uint8_t *)PyBytes_AS_STRING(result), plan.bytes,
                                  (const uint8_t *)kv.buf, (size_t)kv.len, &frames);
    if (n < 0) {
        Py_CLEAR(result);
        goto done;
    }
    if ((size_t)n != plan.bytes || frames != plan.frames) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_SystemError, "take_framed wrote %zd bytes in %lld frames, planned %zu in %lld", n,
                     (long long)frames, plan.bytes, (long long)plan.frames);
    }
done:
    PyBuffer_Release(&kv);
    Py_DECREF(kobj);
    return result;
}

static PyObject *
outbox_end_message(ob_outbox *ob, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"reconnects", NULL};
    PyObject *reconnects;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:end_message", kwlist, &reconnects))
        return NULL;
    if (ob->end == NULL) {
        PyErr_Format(PyExc_RuntimeError, "stream %S: end_message() before end()", ob->stream_id);
        return NULL;
    }
    PyObject *samples = PyLong_FromLongLong(ob->offset);
    PyObject *dropped = PyLong_FromLongLong(ob->dropped_samples / ob->samples_per_ms);
    int r = samples != NULL && dropped != NULL && PyDict_SetItemString(ob->end, "samples", samples) == 0
            && PyDict_SetItemString(ob->end, "dropped_ms", dropped) == 0
            && PyDict_SetItemString(ob->end, "reconnects", reconnects) == 0;
    Py_XDECREF(samples);
    Py_XDECREF(dropped);
    return r ? Py_NewRef(ob->end) : NULL;
}

static PyObject *
outbox_ping_due(ob_outbox *ob, PyObject *Py_UNUSED(ignored))
{
    long long at;
    if (ping_due(ob, &at))
        return PyLong_FromLongLong(at);
    Py_RETURN_NONE;
}

static PyObject *
outbox_pong(ob_outbox *ob, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", NULL};
    PyObject *data;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:pong", kwlist, &data))
        return NULL;
    if (!ob->has_ping)
        Py_RETURN_FALSE;
    long long at = ob->ping_at;
    char payload[8];
    for (int i = 0; i < 8; i++)
        payload[i] = (char)((unsigned long long)at >> (56 - 8 * i));
    PyObject *want = PyBytes_FromStringAndSize(payload, 8);
    if (want == NULL)
        return NULL;
    int eq = PyObject_RichCompareBool(data, want, Py_EQ);   /* data == at.to_bytes(8, "big") */
    Py_DECREF(want);
    if (eq < 0)
        return NULL;
    if (!eq)
        Py_RETURN_FALSE;
    ob->has_ping = 0;
    acknowledge(ob, at);
    Py_RETURN_TRUE;
}

static PyObject *
outbox_end_answered(ob_outbox *ob, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"code", NULL};
    PyObject *code;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:end_answered", kwlist, &code))
        return NULL;
    int in = PySet_Contains(ack_codes, code);
    if (in < 0)
        return NULL;
    if (!in)
        Py_RETURN_FALSE;
    acknowledge(ob, ob->offset);
    Py_RETURN_TRUE;
}

static PyObject *
outbox_acknowledge(ob_outbox *ob, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"offset", NULL};
    long long offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "L:acknowledge", kwlist, &offset))
        return NULL;
    acknowledge(ob, offset);
    Py_RETURN_NONE;
}

static PyObject *
outbox_connection_lost(ob_outbox *ob, PyObject *Py_UNUSED(ignored))
{
    ob->has_ping = 0;
    long long lost = ob->unkept;
    if (lost) {
        ob->unkept = 0;
        if (count_undelivered(ob, lost) < 0)
            return NULL;
    }
    return PyLong_FromLongLong(lost);
}

static PyObject *
outbox_abandon(ob_outbox *ob, PyObject *Py_UNUSED(ignored))
{
    ob->closed = 1;
    ob->dropping = 0;
    long long queued = ob->queued_samples, unacknowledged = ob->retained_samples + ob->unkept;
    clear_data(ob);
    ob->queued_samples = 0;
    ob->retained_samples = 0;
    ob->unkept = 0;
    if (count_dropped(ob, queued) < 0 || count_undelivered(ob, unacknowledged) < 0)
        return NULL;
    return Py_BuildValue("(LL)", queued, unacknowledged);
}

static PyObject *
outbox_close(ob_outbox *ob, PyObject *Py_UNUSED(ignored))
{
    if (ob->dropping && dropping_stopped(ob) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- attributes the Python twin computes or that take None */

static PyObject *
get_pending(ob_outbox *ob, void *c)
{
    return PyBool_FromLong(ob->qruns.len || ob->ev_head != NULL);
}

static PyObject *
get_queued_bytes(ob_outbox *ob, void *c)
{
    return PyLong_FromLongLong(ob->queued_samples * ob->frame_bytes);
}

static PyObject *
get_retained_bytes(ob_outbox *ob, void *c)
{
    return PyLong_FromLongLong(ob->retained_samples * ob->frame_bytes);
}

static PyObject *
get_unkept(ob_outbox *ob, void *c)
{
    return PyLong_FromLongLong(ob->unkept);
}

static PyObject *
get_ping_at(ob_outbox *ob, void *c)
{
    if (!ob->has_ping)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(ob->ping_at);
}

static int
set_ping_at(ob_outbox *ob, PyObject *v, void *c)
{
    if (v == NULL || v == Py_None) {
        ob->has_ping = 0;
        return 0;
    }
    long long at = PyLong_AsLongLong(v);
    if (at == -1 && PyErr_Occurred())
        return -1;
    ob->ping_at = at;
    ob->has_ping = 1;
    return 0;
}

static PyObject *
get_note_sent(ob_outbox *ob, void *c)
{
    return PyBool_FromLong(ob->note_sent);
}

static int
set_note_sent(ob_outbox *ob, PyObject *v, void *c)
{
    int t = v == NULL ? 0 : PyObject_IsTrue(v);
    if (t < 0)
        return -1;
    ob->note_sent = (char)t;
    return 0;
}

static PyObject *
get_sent(ob_outbox *ob, void *c)
{
    if (!ob->has_sent)
        Py_RETURN_NONE;
    return Py_BuildValue("(LL)", ob->sent_first, ob->sent_end);
}

static int
set_sent(ob_outbox *ob, PyObject *v, void *c)
{
    if (v == NULL || v == Py_None) {
        ob->has_sent = 0;
        return 0;
    }
    long long a, b;
    if (!PyArg_ParseTuple(v, "LL;sent must be None or (first, end)", &a, &b))
        return -1;
    ob->sent_first = a;
    ob->sent_end = b;
    ob->has_sent = 1;
    return 0;
}

/* queue and retained: a list of (offset, pcm, samples) per run, as the Python twin's deques hold them */
static PyObject *
runs_list(ob_outbox *ob, const fifo *runs, const fifo *data)
{
    size_t n = NRUNS(runs);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL)
        return NULL;
    cursor rc, dc;
    cur_init(&rc, runs);
    cur_init(&dc, data);
    for (size_t i = 0; i < n; i++) {
        const run *r = cur_run(&rc);
        PyObject *pcm = run_bytes(&dc, (size_t)(r->n * ob->frame_bytes));
        PyObject *item = pcm != NULL ? Py_BuildValue("(LNL)", (long long)r->off, pcm, (long long)r->n) : NULL;
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

static PyObject *
get_queue(ob_outbox *ob, void *c)
{
    return runs_list(ob, &ob->qruns, &ob->qdata);
}

static PyObject *
get_retained(ob_outbox *ob, void *c)
{
    return runs_list(ob, &ob->rruns, &ob->rdata);
}

static PyObject *
get_events(ob_outbox *ob, void *c)
{
    PyObject *list = PyList_New(ob->nevents);
    if (list == NULL)
        return NULL;
    Py_ssize_t i = 0;
    for (const event *e = ob->ev_head; e != NULL; e = e->next, i++) {
        PyObject *item = Py_BuildValue("(Ls#)", (long long)e->pos, e->text, (Py_ssize_t)e->len);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyGetSetDef outbox_getset[] = {
    {"pending", (getter)get_pending, NULL, "Something (audio or an event) is waiting to be taken.", NULL},
    {"queued_bytes", (getter)get_queued_bytes, NULL, NULL, NULL},
    {"retained_bytes", (getter)get_retained_bytes, NULL, NULL, NULL},
    {"unkept_samples", (getter)get_unkept, NULL,
     "Audio that left the resend window unacknowledged and is not known delivered.", NULL},
    {"ping_at", (getter)get_ping_at, (setter)set_ping_at, "The acknowledgement ping in flight: the offset it follows.",
     NULL},
    {"note_sent", (getter)get_note_sent, (setter)set_note_sent, NULL, NULL},
    {"sent", (getter)get_sent, (setter)set_sent, "(first, end) of the audio the last take sent first.", NULL},
    {"queue", (getter)get_queue, NULL, "A copy of the unsent runs: [(offset, pcm, samples)].", NULL},
    {"retained", (getter)get_retained, NULL, "A copy of the resend window: [(offset, pcm, samples)].", NULL},
    {"events", (getter)get_events, NULL, "A copy of the queued events: [(position, text)].", NULL},
    {NULL},
};

#define RO(name, type, field, doc) {name, type, offsetof(ob_outbox, field), READONLY, doc}
static PyMemberDef outbox_members[] = {
    RO("ident", T_OBJECT, ident, NULL),
    RO("stream_id", T_OBJECT, stream_id, NULL),
    RO("totals", T_OBJECT, totals, NULL),
    RO("channels", T_INT, channels, NULL),
    RO("frame_bytes", T_LONGLONG, frame_bytes, "Bytes of one sample of every channel."),
    RO("sample_rate", T_LONGLONG, sample_rate, NULL),
    RO("sample_bytes", T_INT, sample_bytes, "Bytes a sample per channel: 2 (L16) or 1 (G.711)."),
    RO("samples_per_ms", T_LONGLONG, samples_per_ms, NULL),
    RO("frame_samples", T_LONGLONG, frame_samples, "Samples (per channel) in one binary message."),
    RO("max_buffer_ms", T_LONGLONG, max_buffer_ms, NULL),
    RO("resend_ms", T_LONGLONG, resend_ms, NULL),
    RO("max_samples", T_LONGLONG, max_samples, NULL),
    RO("resend_samples", T_LONGLONG, resend_samples, NULL),
    {"ping_every", T_LONGLONG, offsetof(ob_outbox, ping_every), 0, "Unacknowledged audio after which a ping goes."},
    RO("offset", T_LONGLONG, offset, "Samples (per channel) pushed so far."),
    RO("dropped_samples", T_LONGLONG, dropped_samples, NULL),
    RO("dropped_events", T_LONGLONG, dropped_events, NULL),
    RO("sent_samples", T_LONGLONG, sent_samples, NULL),
    RO("acknowledged", T_LONGLONG, acknowledged, NULL),
    RO("resume_at", T_LONGLONG, resume_at, "Where a resumed connection starts (see Outbox.connected)."),
    RO("undelivered_samples", T_LONGLONG, undelivered_samples, NULL),
    RO("queued_samples", T_LONGLONG, queued_samples, NULL),
    RO("retained_samples", T_LONGLONG, retained_samples, NULL),
    RO("expected", T_LONGLONG, expected, NULL),
    RO("started", T_BOOL, started, NULL),
    RO("ended", T_BOOL, ended, NULL),
    RO("closed", T_BOOL, closed, NULL),
    RO("dropping", T_BOOL, dropping, NULL),
    RO("announce_gaps", T_BOOL, announce_gaps, "A drop message before audio that follows a gap."),
    {NULL},
};

#define KW(name) {#name, (PyCFunction)(void (*)(void))outbox_##name, METH_VARARGS | METH_KEYWORDS, NULL}
#define NOARG(name) {#name, (PyCFunction)outbox_##name, METH_NOARGS, NULL}
static PyMethodDef outbox_methods[] = {
    KW(push_audio), KW(push_event), KW(end), NOARG(connected), KW(resend), KW(take),
    {"take_framed", (PyCFunction)(void (*)(void))outbox_take_framed, METH_VARARGS | METH_KEYWORDS,
     "take_framed(keys, budget) -> bytes\n\ntake(budget) as RFC 6455 client frames, then the acknowledgement ping\n"
     "when one is due; keys: 4 bytes per frame, or a callable given the number of key bytes needed."},
    KW(end_message), NOARG(ping_due), KW(pong), KW(end_answered), KW(acknowledge), NOARG(connection_lost),
    NOARG(abandon), NOARG(close), {NULL},
};

static PyTypeObject OutboxType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rtp2ws._wsframe.Outbox",
    .tp_basicsize = sizeof(ob_outbox),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One stream's messages on their way out (the C twin of rtp2ws.ws.outbox.OutboxPy).",
    .tp_new = outbox_new,
    .tp_init = outbox_init,
    .tp_dealloc = (destructor)outbox_dealloc,
    .tp_traverse = (traverseproc)outbox_traverse,
    .tp_clear = (inquiry)outbox_clear,
    .tp_repr = (reprfunc)outbox_repr,
    .tp_methods = outbox_methods,
    .tp_members = outbox_members,
    .tp_getset = outbox_getset,
};

static PyObject *
chunk_counts(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", chunks_used, pool_free);
}

static PyMethodDef module_functions[] = {
    {"chunk_counts", chunk_counts, METH_NOARGS,
     "chunk_counts() -> (in_use, free): the outboxes' audio chunks holding data, and on the free list."},
    {NULL},
};

int
ob_module_init(PyObject *m)
{
    if (PyType_Ready(&TotalsType) < 0 || PyType_Ready(&OutboxType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Totals", (PyObject *)&TotalsType) < 0
        || PyModule_AddObjectRef(m, "Outbox", (PyObject *)&OutboxType) < 0
        || PyModule_AddIntConstant(m, "CHUNK_BYTES", CHUNK_BYTES) < 0
        || PyModule_AddFunctions(m, module_functions) < 0)
        return -1;
    if (ack_codes == NULL) {
        PyObject *codes = Py_BuildValue("(ii)", CLOSE_NORMAL, CLOSE_NO_STATUS);
        ack_codes = codes != NULL ? PyFrozenSet_New(codes) : NULL;
        Py_XDECREF(codes);
        if (ack_codes == NULL)
            return -1;
    }
    return 0;
}
