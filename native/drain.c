/*
 * rtp2ws._wsframe.Drain: the bench's discard sink after the handshake, in C.
 *
 * The sink (rtp2ws/bench/discard.py) does each connection's HTTP upgrade in
 * Python and then hands the socket over with Drain.add(fd, reply, head): the
 * drain takes a duplicate of the descriptor, writes the 101 reply itself and
 * walks the bytes that came after the request (head), and asyncio closes its
 * own copy.  One thread of the drain's own, which never holds the GIL, runs an
 * epoll loop over every handed-over socket: a recv into one large buffer, the
 * RFC 6455 frames walked (5.2: FIN/RSV/opcode, MASK, 7-, 16- or 64-bit
 * lengths; client frames are masked), binary and text frames and the bytes
 * received counted, payloads skipped without unmasking, every ping answered
 * with a pong carrying its unmasked payload (server frames are unmasked), a
 * close echoed with its status code and the socket then closed, frames split
 * anywhere across reads carried over.  The sender's acknowledgement pings
 * (rtp2ws/ws/sender.py) and websockets' keepalive pings need those pongs.
 *
 * DrainWalker is the walk alone, without a socket (feed(bytes) -> the replies
 * to write), the same code the drain runs per connection: the tests feed it
 * and rtp2ws.bench.discard.WalkerPy, its Python twin, the same bytes cut at
 * random places and compare the counts and the replies.
 *
 * Drain(tick_ms=T): after each wake the next comes at least T ms later (not
 * after a full batch of events or a recv of 64 KB or more), so that at realtime
 * a socket's frames gather and are read several at a time: the cost per frame
 * is the recv's, and each recv sends an ACK.  Pongs and the close echo then
 * wait up to T ms (the 101 reply does not: add() writes it), which slows a
 * client that awaits each close in turn (the bench's reference pipeline), so
 * the sink's default is 0: read as soon as data comes.
 *
 * A control frame longer than 125 bytes (5.5) is a protocol error: the walk
 * stops there and the connection is closed without a reply (the twin too).
 *
 * Threads.  add() hands a connection to the drain's thread through a list
 * under a mutex and an eventfd; from then on only that thread touches it.  The
 * counters are written by that thread alone and read by counts() with relaxed
 * atomic loads.  stop() (also at deallocation) wakes the thread, joins it
 * without the GIL, and closes every connection it still holds.  The thread
 * blocks every signal, so that SIGTERM reaches the interpreter's thread.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "drain.h"

#define CONTROL_MAX 125                      /* longest control frame payload (RFC 6455 5.5) */
#define UNIT_MAX (14 + CONTROL_MAX)          /* longest header, and a control frame with it */
#define READ_BYTES (256 * 1024)              /* one recv's buffer */
#define MAX_EVENTS 256
#define STREAMING_BYTES (64 * 1024)          /* a recv this large: a socket streams faster than ticks */

/* ------------------------------------------------------------------ the walk */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} drain_out;

static int
out_put(drain_out *o, const uint8_t *p, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n)
            cap *= 2;
        uint8_t *buf = realloc(o->buf, cap);
        if (buf == NULL)
            return -1;
        o->buf = buf;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

typedef struct {
    uint64_t binary, text;        /* data frames counted, by their first frame's opcode */
    uint64_t skip;                /* payload bytes of the current data frame still to skip */
    uint8_t head[UNIT_MAX];       /* an incomplete header, or control frame, carried over */
    size_t headlen;
    int closing;                  /* a close frame (or a protocol error) was met: nothing more is walked */
} drain_walker;

/* The bytes of the unit that starts at p, given `have` of them: a data frame's
   header, or a control frame's header and payload.  Grows with `have` until it
   is final (at most UNIT_MAX). */
static size_t
unit_need(const uint8_t *p, size_t have)
{
    if (have < 2)
        return 2;
    unsigned len7 = p[1] & 0x7F;
    int control = (p[0] & 0x0F) >= 8;
    if (control && len7 > CONTROL_MAX)
        return 2;                /* too long for a control frame: an error, known from these two bytes */
    size_t hl = 2 + ((p[1] & 0x80) ? 4 : 0) + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
    if (have < hl || !control)
        return hl;
    return hl + len7;
}

/* One unit, complete (unit_need bytes at p): count a data frame and set the
   payload to skip, or answer a control frame.  -1 when out of memory. */
static int
walk_unit(drain_walker *w, const uint8_t *p, drain_out *out)
{
    unsigned len7 = p[1] & 0x7F;
    int masked = (p[1] & 0x80) != 0;
    size_t hl = 2 + (masked ? 4 : 0) + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
    int op = p[0] & 0x0F;
    if (op < 8) {
        uint64_t len = len7;
        if (len7 == 126)
            len = ((uint64_t)p[2] << 8) | p[3];
        else if (len7 == 127) {
            len = 0;
            for (int i = 2; i < 10; i++)
                len = (len << 8) | p[i];
        }
        if (op == 2)
            w->binary++;
        else if (op == 1)
            w->text++;
        w->skip = len;
        return 0;
    }
    if (len7 > CONTROL_MAX) {
        w->closing = 1;
        return 0;
    }
    uint8_t reply[2 + CONTROL_MAX];
    const uint8_t *mask = p + hl - 4;
    for (unsigned i = 0; i < len7; i++)
        reply[2 + i] = masked ? (uint8_t)(p[hl + i] ^ mask[i & 3]) : p[hl + i];
    if (op == 8) {                               /* close: echo the status code, then close */
        unsigned n = len7 < 2 ? len7 : 2;
        reply[0] = 0x88;
        reply[1] = (uint8_t)n;
        w->closing = 1;
        return out_put(out, reply, 2 + n);
    }
    if (op == 9) {                               /* ping: a pong with the same payload */
        reply[0] = 0x8A;
        reply[1] = (uint8_t)len7;
        return out_put(out, reply, 2 + len7);
    }
    return 0;                                    /* pong, reserved: ignored */
}

/* Walk n bytes; the replies are appended to out.  -1 when out of memory. */
static int
drain_walk(drain_walker *w, const uint8_t *data, size_t n, drain_out *out)
{
    size_t pos = 0;
    while (pos < n && !w->closing) {
        if (w->skip) {
            uint64_t k = w->skip < n - pos ? w->skip : n - pos;
            w->skip -= k;
            pos += (size_t)k;
            continue;
        }
        if (w->headlen) {
            size_t need = unit_need(w->head, w->headlen);
            while (w->headlen < need && pos < n) {
                size_t k = need - w->headlen < n - pos ? need - w->headlen : n - pos;
                memcpy(w->head + w->headlen, data + pos, k);
                w->headlen += k;
                pos += k;
                need = unit_need(w->head, w->headlen);
            }
            if (w->headlen < need)
                return 0;
            w->headlen = 0;
            if (walk_unit(w, w->head, out) < 0)
                return -1;
            continue;
        }
        size_t have = n - pos;
        size_t need = unit_need(data + pos, have);
        if (have < need) {
            memcpy(w->head, data + pos, have);
            w->headlen = have;
            return 0;
        }
        if (walk_unit(w, data + pos, out) < 0)
            return -1;
        pos += need;
    }
    return 0;
}

/* ------------------------------------------------------------------ DrainWalker */

static int
no_arguments(const char *name, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_Format(PyExc_TypeError, "%s() takes no arguments", name);
        return -1;
    }
    return 0;
}

typedef struct {
    PyObject_HEAD
    drain_walker w;
} walker_obj;

static PyObject *
walker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (no_arguments("DrainWalker", args, kwds) < 0)
        return NULL;
    walker_obj *self = (walker_obj *)type->tp_alloc(type, 0);
    if (self != NULL)
        memset(&self->w, 0, sizeof(self->w));
    return (PyObject *)self;
}

static PyObject *
walker_feed(walker_obj *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    drain_out out = {NULL, 0, 0};
    int rc = drain_walk(&self->w, view.buf, (size_t)view.len, &out);
    PyBuffer_Release(&view);
    if (rc < 0) {
        free(out.buf);
        return PyErr_NoMemory();
    }
    PyObject *result = PyBytes_FromStringAndSize((const char *)out.buf, (Py_ssize_t)out.len);
    free(out.buf);
    return result;
}

static PyObject *
walker_get_binary(walker_obj *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->w.binary);
}

static PyObject *
walker_get_text(walker_obj *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->w.text);
}

static PyObject *
walker_get_closing(walker_obj *self, void *closure)
{
    return PyBool_FromLong(self->w.closing);
}

static PyMethodDef walker_methods[] = {
    {"feed", (PyCFunction)walker_feed, METH_O,
     "feed(data) -> bytes\n\nWalk the bytes received; the replies to write (pongs, the close echoed)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef walker_getset[] = {
    {"binary", (getter)walker_get_binary, NULL, "Binary frames met.", NULL},
    {"text", (getter)walker_get_text, NULL, "Text frames met.", NULL},
    {"closing", (getter)walker_get_closing, NULL,
     "A close frame (or a protocol error) was met: the connection is to be closed, nothing more is walked.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WalkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rtp2ws._wsframe.DrainWalker",
    .tp_basicsize = sizeof(walker_obj),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "DrainWalker(): the frames of one connection walked as the drain walks them "
              "(rtp2ws.bench.discard.WalkerPy's C twin).",
    .tp_new = walker_new,
    .tp_methods = walker_methods,
    .tp_getset = walker_getset,
};

/* ------------------------------------------------------------------ Drain */

typedef struct conn {
    int fd;
    uint32_t events;              /* the epoll interest now registered */
    drain_walker w;
    drain_out out;                /* replies not yet written: out.buf[sent, out.len) */
    size_t sent;
    uint8_t *first;               /* what came after the request, walked when the thread takes it */
    size_t firstlen;
    struct conn *prev, *next;
} conn;

typedef struct {
    PyObject_HEAD
    int epfd, evfd;
    pthread_t thread;
    int running;                  /* the thread was started and not yet joined */
    pthread_mutex_t lock;         /* guards pending and stopping */
    conn *pending;                /* handed over, not yet taken by the thread */
    int stopping;
    conn *conns;                  /* the thread's own */
    long tick_ns;                 /* after a wake, the next at least this much later */
    int streaming;                /* this wake read a socket that streams: no pause after it */
    uint64_t added, closed, binary, text, bytes;
    uint8_t *rbuf;
} drain_obj;

static void
count(uint64_t *counter, uint64_t n)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static void
conn_free(conn *c)
{
    free(c->out.buf);
    free(c->first);
    free(c);
}

static void
conn_close(drain_obj *d, conn *c)
{
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    count(&d->closed, 1);
    conn_free(c);
}

/* Write what the replies hold; then read again, or close when closing.
   Returns 0, or -1 when the connection was closed. */
static int
conn_flush(drain_obj *d, conn *c)
{
    while (c->sent < c->out.len) {
        ssize_t s = send(c->fd, c->out.buf + c->sent, c->out.len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (s > 0) {
            c->sent += (size_t)s;
            continue;
        }
        if (s < 0 && errno == EINTR)
            continue;
        if (s < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_close(d, c);
        return -1;
    }
    uint32_t want;
    if (c->sent == c->out.len) {
        c->sent = c->out.len = 0;
        if (c->w.closing) {
            conn_close(d, c);
            return -1;
        }
        want = EPOLLIN;
    }
    else
        want = c->w.closing ? EPOLLOUT : EPOLLIN | EPOLLOUT;
    if (want != c->events) {
        struct epoll_event ev = {.events = want, .data.ptr = c};
        if (epoll_ctl(d->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
            conn_close(d, c);
            return -1;
        }
        c->events = want;
    }
    return 0;
}

static void
walk_into(drain_obj *d, conn *c, const uint8_t *data, size_t n)
{
    uint64_t b = c->w.binary, t = c->w.text;
    if (drain_walk(&c->w, data, n, &c->out) < 0)
        c->w.closing = 1;                          /* out of memory: give the connection up */
    if (c->w.binary != b)
        count(&d->binary, c->w.binary - b);
    if (c->w.text != t)
        count(&d->text, c->w.text - t);
}

/* A connection handed over: registered, its reply written, its first bytes walked. */
static void
conn_start(drain_obj *d, conn *c)
{
    c->prev = NULL;
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        conn_close(d, c);
        return;
    }
    c->events = EPOLLIN;
    if (c->firstlen) {
        walk_into(d, c, c->first, c->firstlen);
        free(c->first);
        c->first = NULL;
        c->firstlen = 0;
    }
    conn_flush(d, c);
}

static void
conn_read(drain_obj *d, conn *c)
{
    ssize_t r = recv(c->fd, d->rbuf, READ_BYTES, MSG_DONTWAIT);
    if (r > 0) {
        if (r >= STREAMING_BYTES)
            d->streaming = 1;
        count(&d->bytes, (uint64_t)r);
        walk_into(d, c, d->rbuf, (size_t)r);
        conn_flush(d, c);
    }
    else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        conn_close(d, c);
}

static void *
drain_thread(void *arg)
{
    drain_obj *d = arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(d->epfd, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        struct timespec woke;
        clock_gettime(CLOCK_MONOTONIC, &woke);
        d->streaming = 0;
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c == NULL) {                       /* the eventfd: connections handed over, or stop */
                uint64_t v;
                ssize_t r = read(d->evfd, &v, sizeof(v));
                (void)r;
                pthread_mutex_lock(&d->lock);
                conn *list = d->pending;
                d->pending = NULL;
                int stopping = d->stopping;
                pthread_mutex_unlock(&d->lock);
                while (list) {
                    conn *next = list->next;
                    conn_start(d, list);
                    list = next;
                }
                if (stopping)
                    return NULL;
                continue;
            }
            uint32_t e = evs[i].events;
            if (e & EPOLLOUT) {
                if (conn_flush(d, c) < 0)
                    continue;
            }
            if ((e & (EPOLLIN | EPOLLERR | EPOLLHUP)) && (c->events & EPOLLIN))
                conn_read(d, c);
            else if (e & (EPOLLERR | EPOLLHUP))
                conn_close(d, c);
        }
        if (d->tick_ns > 0 && n < MAX_EVENTS && !d->streaming) {
            /* let the frames gather: each socket then takes several in one recv (a
               recv costs about 4 us here, most of it the ACK it sends), one
               epoll_wait finds many sockets ready, and the writers wake nobody.
               Not after a full batch of events or a socket that streams (--speed
               max): the pause would throttle it */
            struct timespec until = woke;
            until.tv_nsec += d->tick_ns;
            until.tv_sec += until.tv_nsec / 1000000000L;
            until.tv_nsec %= 1000000000L;
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
                ;
        }
    }
    return NULL;
}

/* Wake the thread to stop, join it (without the GIL) and close what it holds. */
static void
drain_stop(drain_obj *d)
{
    if (d->running) {
        pthread_mutex_lock(&d->lock);
        d->stopping = 1;
        pthread_mutex_unlock(&d->lock);
        uint64_t one = 1;
        ssize_t r = write(d->evfd, &one, sizeof(one));
        (void)r;
        Py_BEGIN_ALLOW_THREADS
        pthread_join(d->thread, NULL);
        Py_END_ALLOW_THREADS
        d->running = 0;
    }
    while (d->conns)
        conn_close(d, d->conns);
    while (d->pending) {                           /* handed over after the thread's last look */
        conn *c = d->pending;
        d->pending = c->next;
        close(c->fd);
        count(&d->closed, 1);
        conn_free(c);
    }
    if (d->epfd >= 0)
        close(d->epfd);
    if (d->evfd >= 0)
        close(d->evfd);
    d->epfd = d->evfd = -1;
    d->stopping = 1;
}

static PyObject *
drain_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    drain_obj *d = (drain_obj *)type->tp_alloc(type, 0);
    if (d == NULL)
        return NULL;
    d->epfd = d->evfd = -1;
    d->stopping = 1;                               /* until __init__ starts it */
    pthread_mutex_init(&d->lock, NULL);
    return (PyObject *)d;
}

static int
drain_init(drain_obj *d, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"tick_ms", NULL};
    double tick_ms = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|d:Drain", kwlist, &tick_ms))
        return -1;
    if (!(tick_ms >= 0.0 && tick_ms <= 1000.0)) {
        PyErr_SetString(PyExc_ValueError, "tick_ms must be from 0 to 1000");
        return -1;
    }
    if (d->rbuf != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the drain is already started");
        return -1;
    }
    d->tick_ns = (long)(tick_ms * 1e6);
    d->rbuf = malloc(READ_BYTES);
    if (d->rbuf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    d->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (d->epfd < 0 || d->evfd < 0 || epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->evfd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    /* the thread starts with every signal blocked: they go to the interpreter's thread */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int err = pthread_create(&d->thread, NULL, drain_thread, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    d->running = 1;
    d->stopping = 0;
    return 0;
}

static void
drain_dealloc(drain_obj *d)
{
    drain_stop(d);
    pthread_mutex_destroy(&d->lock);
    free(d->rbuf);
    Py_TYPE(d)->tp_free((PyObject *)d);
}

static PyObject *
drain_add(drain_obj *d, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "reply", "head", NULL};
    int fd;
    Py_buffer reply = {NULL}, head = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|y*y*:add", kwlist, &fd, &reply, &head))
        return NULL;
    PyObject *result = NULL;
    conn *c = calloc(1, sizeof(conn));
    if (c == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    c->fd = -1;
    if ((reply.buf && reply.len && out_put(&c->out, reply.buf, (size_t)reply.len) < 0)
        || (head.buf && head.len && (c->first = malloc((size_t)head.len)) == NULL)) {
        PyErr_NoMemory();
        goto done;
    }
    if (c->first) {
        memcpy(c->first, head.buf, (size_t)head.len);
        c->firstlen = (size_t)head.len;
    }
    c->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (c->fd < 0 || fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    /* the reply now, not at the thread's next wake (which may be a tick away): the
       client's handshake waits for it; what the socket does not take, the thread writes */
    while (c->sent < c->out.len) {
        ssize_t s = send(c->fd, c->out.buf + c->sent, c->out.len - c->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (s <= 0 && !(s < 0 && errno == EINTR))
            break;
        if (s > 0)
            c->sent += (size_t)s;
    }
    pthread_mutex_lock(&d->lock);
    int stopped = d->stopping;
    if (!stopped) {
        c->next = d->pending;
        d->pending = c;
        count(&d->added, 1);
    }
    pthread_mutex_unlock(&d->lock);
    if (stopped) {
        PyErr_SetString(PyExc_ValueError, "the drain is stopped");
        goto done;
    }
    c = NULL;
    uint64_t one = 1;
    ssize_t r = write(d->evfd, &one, sizeof(one));
    (void)r;
    result = Py_NewRef(Py_None);
done:
    if (c != NULL) {
        if (c->fd >= 0)
            close(c->fd);
        conn_free(c);
    }
    if (reply.buf)
        PyBuffer_Release(&reply);
    if (head.buf)
        PyBuffer_Release(&head);
    return result;
}

static PyObject *
drain_counts(drain_obj *d, PyObject *unused)
{
    return Py_BuildValue("{sKsKsKsKsK}",
                         "connections", (unsigned long long)__atomic_load_n(&d->added, __ATOMIC_RELAXED),
                         "closed", (unsigned long long)__atomic_load_n(&d->closed, __ATOMIC_RELAXED),
                         "binary", (unsigned long long)__atomic_load_n(&d->binary, __ATOMIC_RELAXED),
                         "text", (unsigned long long)__atomic_load_n(&d->text, __ATOMIC_RELAXED),
                         "bytes", (unsigned long long)__atomic_load_n(&d->bytes, __ATOMIC_RELAXED));
}

static PyObject *
drain_stop_method(drain_obj *d, PyObject *unused)
{
    drain_stop(d);
    Py_RETURN_NONE;
}

static PyMethodDef drain_methods[] = {
    {"add", (PyCFunction)(void (*)(void))drain_add, METH_VARARGS | METH_KEYWORDS,
     "add(fd, reply=b'', head=b'')\n\nHand a connection over: the drain takes a duplicate of fd, writes\n"
     "reply first, walks head (what came after the handshake) and then every byte it reads."},
    {"counts", (PyCFunction)drain_counts, METH_NOARGS,
     "counts() -> dict\n\nconnections handed over, closed, binary and text frames, bytes read by the drain."},
    {"stop", (PyCFunction)drain_stop_method, METH_NOARGS,
     "stop()\n\nStop the thread and close every connection it holds; add() raises ValueError after."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DrainType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rtp2ws._wsframe.Drain",
    .tp_basicsize = sizeof(drain_obj),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Drain(): the discard sink's WebSocket connections after their handshake, "
              "read, walked and answered by a thread of its own (rtp2ws.bench.discard).",
    .tp_new = drain_new,
    .tp_init = (initproc)drain_init,
    .tp_dealloc = (destructor)drain_dealloc,
    .tp_methods = drain_methods,
};

int
drain_module_init(PyObject *m)
{
    if (PyType_Ready(&WalkerType) < 0 || PyType_Ready(&DrainType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "DrainWalker", (PyObject *)&WalkerType) < 0
        || PyModule_AddObjectRef(m, "Drain", (PyObject *)&DrainType) < 0)
        return -1;
    return 0;
}
