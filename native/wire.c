/*
 * rtp2ws._wsframe.Wire: the C twin of rtp2ws.ws.wire.Wire, one plain-TCP
 * connection's write side (its own duplicate of the socket's descriptor,
 * non-blocking; what the socket does not take kept as the tail; broken at the
 * first real error), with the same constructor, methods and attributes;
 * rtp2ws/ws/wire.py is the reference twin and says what each means.  The
 * same tests run against both.  Its ``tail`` is a copy (bytes), made when read.
 *
 * send_batches(items, budget): the C twin of rtp2ws.ws.wire.send_batches_py,
 * the sender's flush of every plain-TCP stream that may write now.  items are
 * (Outbox, Wire) pairs; for each, the outbox's batch (ob_take_framed: masked
 * client frames, the acknowledgement ping when due) goes into one scratch
 * arena, keyed from a pool of masking keys, and then to the wire, as
 * Wire.write would write it.  It returns the attention list: (index, flags,
 * error) for the items the sender must still act on (PENDING, ENDED,
 * BLOCKED, BROKE, SENT, FAILED; see ws/wire.py), nothing for the others.
 *
 * The GIL.  write(2) runs without it, as os.write does, but send_batches
 * releases it once for all the writes of a call, not once per write: a thread
 * that gives the GIL away may wait up to the switch interval (5 ms) to get it
 * back while another thread runs Python, and the flush writes a thousand
 * sockets per tick.  Safe because nothing of a Python object is touched while
 * it is released: the bytes written are the call's own arena (or a pinned
 * buffer, or the wire's tail), the descriptors are copied beforehand, and
 * every wire being written is marked busy, so that another thread calling one
 * of its methods without the lock it is documented to hold (the sender's)
 * gets a RuntimeError instead of a tail changing under the write or its
 * descriptor closed and reused.  Callers that hold the lock never see it:
 * they wait on the lock (which lets go of the GIL) until the writer is done.
 *
 * io_uring.  Built with liburing (setup.py links it when its header is there),
 * the GIL-free pass hands all the call's writes to the kernel at once: one
 * IORING_OP_SEND per wire (MSG_DONTWAIT | MSG_NOSIGNAL: a full socket answers
 * EAGAIN at once, as write(2) on the non-blocking descriptor does, a reset one
 * EPIPE without a signal) submitted together, then every completion reaped
 * before the GIL is taken back, so each job ends exactly as put() would leave
 * it (a short send has its rest written by put()).  One io_uring_enter for a
 * thousand sockets instead of a thousand write(2)s: the per-call entry and
 * file look-up are what it saves (`python benchmarks/outbox_plane.py --sockets
 * --paced --streams 400`: the whole flush 2.76 us a frame of CPU with write(2),
 * 2.34 us through the ring; 4.43 against 3.51 us of wall time).  The ring
 * is made on first use, again in a forked child (it is the parent's), and
 * not at all when the kernel refuses it (ENOSYS, EPERM under seccomp): then,
 * and while another thread's call uses it, the writes are write(2)s as
 * before.  RTP2WS_NO_URING=1 in the environment, or use_uring(False), turns
 * it off.
 *
 * Masking keys (RFC 6455 5.3: unpredictable, from a strong source): a pool of
 * KEY_POOL bytes refilled by getrandom(2) (os.urandom where that fails),
 * each byte used once, copied into the call's arena before a take uses them;
 * the refill holds the GIL (tens of microseconds every 16,384 frames), rather
 * than letting it go and waiting for it back.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/random.h>
#define HAVE_GETRANDOM 1
#endif

#include "lane.h"
#include "outbox.h"
#include "wire.h"

#ifdef HAVE_LIBURING
#include <liburing.h>
#include <sys/socket.h>
#endif

/* the attention flags of send_batches (ws/wire.py has the same values) */
#define F_PENDING 1     /* the outbox still has something to take: mark the stream again */
#define F_ENDED 2       /* the outbox ended and nothing is pending: wake the stream's task */
#define F_BLOCKED 4     /* the wire holds a tail: retry it from the event loop */
#define F_BROKE 8       /* this write broke the wire */
#define F_SENT 16       /* the outbox's sent is set: the latency probe (on_write) */
#define F_FAILED 32     /* the take (or keeping the tail) raised: error holds the exception */
#define F_WAKE 64       /* a lane that may not write now: wake its stream's task (Stream._may_take) */
#define F_MARK 128      /* a live lane without a wire (TLS): mark its stream for the sender's own flush */

#define KEY_POOL (64 * 1024)
#define ARENA_KEEP (4 * 1024 * 1024)     /* the shared arena is freed when it grew past this */

/* ------------------------------------------------------------------ the wire */

typedef struct {
    PyObject_HEAD
    int fd;                   /* the duplicate, -1 once closed */
    int busy;                 /* a write(2) on it runs without the GIL */
    uint8_t *buf;             /* the tail: buf[head, head + len) */
    size_t head, len, cap;
    long long written;
    PyObject *broken;         /* NULL, or the OSError that broke it */
    PyObject *lock;
} wire_obj;

static PyTypeObject WireType;

static int
tail_append(wire_obj *w, const uint8_t *p, size_t n)
{
    if (!n)
        return 0;
    if (w->head + w->len + n > w->cap && w->head) {
        memmove(w->buf, w->buf + w->head, w->len);
        w->head = 0;
    }
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 4096;
        if (cap < w->len + n)
            cap = w->len + n;
        uint8_t *b = PyMem_Realloc(w->buf, cap);
        if (b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->head + w->len, p, n);
    w->len += n;
    return 0;
}

static void
tail_clear(wire_obj *w)
{
    PyMem_Free(w->buf);
    w->buf = NULL;
    w->head = w->len = w->cap = 0;
}

/* write(2) until all of p is written, the socket is full, or an error: returns
   the bytes written; *err is 0, or the errno that stopped it (EINTR is
   retried).  Touches no Python object: runs without the GIL. */
static size_t
put(int fd, const uint8_t *p, size_t n, int *err)
{
    size_t pos = 0;
    *err = 0;
    while (pos < n) {
        ssize_t k = write(fd, p + pos, n - pos);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            break;
        }
        if (k == 0) {             /* never for a socket; not a loop forever if it were */
            *err = EAGAIN;
            break;
        }
        pos += (size_t)k;
    }
    return pos;
}

/* ------------------------------------------------------------------ io_uring */

static int uring_wanted = 1;          /* use_uring(); RTP2WS_NO_URING at import */
static long long uring_sends, uring_calls;   /* sends and calls that went through the ring */

#ifdef HAVE_LIBURING
#define RING_ENTRIES 512
static struct io_uring ring;
static int ring_state;                /* 0 not made, 1 ready, -errno refused */
static pid_t ring_pid;
static int ring_busy;                 /* a call's writes are in it (set with the GIL) */

/* The ring, made on first use (and again in a forked child); NULL when the kernel
   refuses it.  With the GIL. */
static struct io_uring *
ring_get(void)
{
    if (!uring_wanted)
        return NULL;
    if (ring_state == 1 && ring_pid != getpid()) {    /* the parent's, inherited */
        io_uring_queue_exit(&ring);
        ring_state = 0;
    }
    if (ring_state == 0) {
        int r = io_uring_queue_init(RING_ENTRIES, &ring, 0);
        ring_state = r < 0 ? r : 1;
        ring_pid = getpid();
    }
    return ring_state == 1 ? &ring : NULL;
}
#endif

static PyObject *
use_uring(PyObject *self, PyObject *args)
{
    int want = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "|p:use_uring", &want))
        return NULL;
    if (want >= 0)
        uring_wanted = want;
#ifdef HAVE_LIBURING
    if (ring_busy)
        Py_RETURN_FALSE;
    return PyBool_FromLong(ring_get() != NULL);
#else
    Py_RETURN_FALSE;
#endif
}

static PyObject *
uring_info(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    (void)self;
#ifdef HAVE_LIBURING
    const char *state = !uring_wanted ? "off" : ring_state == 1 ? "on" : ring_state == 0 ? "not made yet"
                                                                                         : "refused";
    return Py_BuildValue("{s:s,s:i,s:L,s:L}", "state", state, "error", ring_state < 0 ? -ring_state : 0,
                         "sends", uring_sends, "calls", uring_calls);
#else
    return Py_BuildValue("{s:s,s:i,s:L,s:L}", "state", "not built", "error", 0, "sends", uring_sends,
                         "calls", uring_calls);
#endif
}

static int
would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK;
}

/* The wire broke with errno err: the OSError os.write would have raised (its
   subclass: BrokenPipeError, ConnectionResetError, ...), no tail.  -1 if the
   exception could not be made (the wire then stays as it was, the error set). */
static int
break_wire(wire_obj *w, int err)
{
    PyObject *e = PyObject_CallFunction(PyExc_OSError, "is", err, strerror(err));
    if (e == NULL)
        return -1;
    Py_XSETREF(w->broken, e);
    tail_clear(w);
    return 0;
}

static int
is_open(const wire_obj *w)
{
    return w->fd >= 0 && w->broken == NULL;
}

static int
not_busy(const wire_obj *w)
{
    if (w->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the wire is being written by another thread (its methods need its lock)");
        return -1;
    }
    return 0;
}

static PyObject *
wire_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fd", "lock", NULL};
    int fd;
    PyObject *lock;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO:Wire", kwlist, &fd, &lock))
        return NULL;
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);      /* os.dup: not inheritable */
    if (dup < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    int flags = fcntl(dup, F_GETFL);
    if (flags < 0 || fcntl(dup, F_SETFL, flags | O_NONBLOCK) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(dup);
        return NULL;
    }
    wire_obj *w = (wire_obj *)type->tp_alloc(type, 0);
    if (w == NULL) {
        close(dup);
        return NULL;
    }
    w->fd = dup;
    w->lock = Py_NewRef(lock);
    return (PyObject *)w;
}

static int
wire_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self, (void)args, (void)kwargs;
    return 0;                 /* everything was done by wire_new */
}

static int
wire_traverse(wire_obj *w, visitproc visit, void *arg)
{
    Py_VISIT(w->broken);
    Py_VISIT(w->lock);
    return 0;
}

static int
wire_clear(wire_obj *w)
{
    Py_CLEAR(w->broken);
    Py_CLEAR(w->lock);
    return 0;
}

static void
wire_dealloc(wire_obj *w)
{
    PyObject_GC_UnTrack(w);
    if (w->fd >= 0)
        close(w->fd);
    tail_clear(w);
    wire_clear(w);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *
wire_repr(wire_obj *w)
{
    return PyUnicode_FromFormat("Wire(fd=%d, tail=%zu, broken=%s)", w->fd, w->len,
                                w->broken != NULL ? "True" : "False");
}

static PyObject *
wire_write(wire_obj *w, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"data", NULL};
    Py_buffer data;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*:write", kwlist, &data))
        return NULL;
    PyObject *r = NULL;
    if (not_busy(w) < 0)
        goto done;
    if (!is_open(w) || data.len == 0) {
        r = Py_NewRef(Py_None);
        goto done;
    }
    if (w->len) {
        if (tail_append(w, data.buf, (size_t)data.len) == 0)
            r = Py_NewRef(Py_None);
        goto done;
    }
    int fd = w->fd, err;
    size_t n;
    w->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    n = put(fd, data.buf, (size_t)data.len, &err);
    Py_END_ALLOW_THREADS
    w->busy = 0;
    w->written += (long long)n;
    if (err && !would_block(err)) {
        if (break_wire(w, err) == 0)
            r = Py_NewRef(Py_None);
        goto done;
    }
    if (tail_append(w, (const uint8_t *)data.buf + n, (size_t)data.len - n) == 0)
        r = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&data);
    return r;
}

static PyObject *
wire_retry(wire_obj *w, PyObject *Py_UNUSED(ignored))
{
    if (not_busy(w) < 0)
        return NULL;
    if (!w->len || !is_open(w))
        Py_RETURN_TRUE;
    int fd = w->fd, err;
    size_t n;
    const uint8_t *p = w->buf + w->head;
    size_t len = w->len;
    w->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    n = put(fd, p, len, &err);
    Py_END_ALLOW_THREADS
    w->busy = 0;
    w->written += (long long)n;
    if (err && !would_block(err)) {
        if (break_wire(w, err) < 0)
            return NULL;
        Py_RETURN_TRUE;
    }
    w->head += n;
    w->len -= n;
    if (!w->len)
        tail_clear(w);
    return PyBool_FromLong(w->len == 0);
}

static PyObject *
wire_close(wire_obj *w, PyObject *Py_UNUSED(ignored))
{
    if (not_busy(w) < 0)
        return NULL;
    PyObject *tail = w->broken == NULL ? PyBytes_FromStringAndSize((const char *)w->buf + w->head, (Py_ssize_t)w->len)
                                       : PyBytes_FromStringAndSize(NULL, 0);
    if (tail == NULL)
        return NULL;
    tail_clear(w);
    if (w->fd >= 0) {
        int r = close(w->fd);
        w->fd = -1;
        if (r < 0) {
            Py_DECREF(tail);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    return tail;
}

static PyObject *
get_fd(wire_obj *w, void *c)
{
    return PyLong_FromLong(w->fd);
}

static PyObject *
get_tail(wire_obj *w, void *c)
{
    return PyBytes_FromStringAndSize((const char *)w->buf + w->head, (Py_ssize_t)w->len);
}

static PyObject *
get_broken(wire_obj *w, void *c)
{
    return Py_NewRef(w->broken != NULL ? w->broken : Py_None);
}

static PyObject *
get_written(wire_obj *w, void *c)
{
    return PyLong_FromLongLong(w->written);
}

static PyObject *
get_lock(wire_obj *w, void *c)
{
    return Py_NewRef(w->lock);
}

static PyObject *
get_blocked(wire_obj *w, void *c)
{
    return PyBool_FromLong(w->len != 0);
}

static PyObject *
get_open(wire_obj *w, void *c)
{
    return PyBool_FromLong(is_open(w));
}

static PyGetSetDef wire_getset[] = {
    {"fd", (getter)get_fd, NULL, "The wire's own duplicate of the socket's descriptor (-1 once closed).", NULL},
    {"tail", (getter)get_tail, NULL, "A copy of the bytes the socket has not taken yet.", NULL},
    {"broken", (getter)get_broken, NULL, "None, or the OSError that broke the wire.", NULL},
    {"written", (getter)get_written, NULL, "Bytes the socket took.", NULL},
    {"lock", (getter)get_lock, NULL, "The lock every method is called with.", NULL},
    {"blocked", (getter)get_blocked, NULL, "Bytes wait for the socket to take them.", NULL},
    {"open", (getter)get_open, NULL, "Not closed, not broken.", NULL},
    {NULL},
};

static PyMethodDef wire_methods[] = {
    {"write", (PyCFunction)(void (*)(void))wire_write, METH_VARARGS | METH_KEYWORDS,
     "write(data): write data after everything written before it."},
    {"retry", (PyCFunction)wire_retry, METH_NOARGS,
     "retry() -> bool: write what waits; True once nothing does (or the wire can write no more)."},
    {"close", (PyCFunction)wire_close, METH_NOARGS,
     "close() -> bytes: stop writing; what was still waiting (nothing once broken); closes the descriptor."},
    {NULL},
};

static PyTypeObject WireType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rtp2ws._wsframe.Wire",
    .tp_basicsize = sizeof(wire_obj),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Wire(fd, lock): the write side of one connection's socket (rtp2ws.ws.wire.Wire's C twin).",
    .tp_new = wire_new,
    .tp_init = wire_init,
    .tp_dealloc = (destructor)wire_dealloc,
    .tp_traverse = (traverseproc)wire_traverse,
    .tp_clear = (inquiry)wire_clear,
    .tp_repr = (reprfunc)wire_repr,
    .tp_methods = wire_methods,
    .tp_getset = wire_getset,
};

/* ------------------------------------------------------------------ masking keys */

static uint8_t key_pool[KEY_POOL];
static size_t key_at = KEY_POOL;     /* bytes of the pool already handed out */

static int
urandom_py(uint8_t *p, size_t n)
{
    PyObject *os = PyImport_ImportModule("os");
    if (os == NULL)
        return -1;
    PyObject *b = PyObject_CallMethod(os, "urandom", "n", (Py_ssize_t)n);
    Py_DECREF(os);
    if (b == NULL)
        return -1;
    if (!PyBytes_Check(b) || (size_t)PyBytes_GET_SIZE(b) != n) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_SystemError, "os.urandom gave the wrong number of bytes");
        return -1;
    }
    memcpy(p, PyBytes_AS_STRING(b), n);
    Py_DECREF(b);
    return 0;
}

static int
fill_random(uint8_t *p, size_t n)
{
#ifdef HAVE_GETRANDOM
    size_t pos = 0;
    while (pos < n) {
        ssize_t k = getrandom(p + pos, n - pos, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return urandom_py(p + pos, n - pos);     /* ENOSYS (an old kernel), ... */
        }
        pos += (size_t)k;
    }
    return 0;
#else
    return urandom_py(p, n);
#endif
}

/* Copy n bytes of fresh keys to dst (never the same byte twice); -1 with an
   exception if the source failed. */
static int
take_keys(uint8_t *dst, size_t n)
{
    while (n) {
        if (key_at == KEY_POOL) {
            if (fill_random(key_pool, KEY_POOL) < 0)
                return -1;
            key_at = 0;
        }
        size_t k = KEY_POOL - key_at < n ? KEY_POOL - key_at : n;
        memcpy(dst, key_pool + key_at, k);
        key_at += k;
        dst += k;
        n -= k;
    }
    return 0;
}

/* ------------------------------------------------------------------ send_batches */

static uint8_t *arena;               /* shared scratch of send_batches, unless in use */
static PyObject *str_state, *str_is_closing;    /* interned names, for the lanes' checks */
static size_t arena_cap;
static int arena_busy;

typedef struct {
    uint8_t *buf;
    size_t cap;
    int own;                 /* a call of its own (another thread's is in the shared one) */
} scratch;

static int
scratch_need(scratch *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    size_t cap = s->cap ? 2 * s->cap : 256 * 1024;
    if (cap < n)
        cap = n;
    uint8_t *b = PyMem_RawRealloc(s->buf, cap);
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->buf = b;
    s->cap = cap;
    return 0;
}

typedef struct {
    wire_obj *w;              /* NULL: nothing to write for this item (a lane that may not) */
    ob_outbox *ob;
    size_t at, n;            /* its frames in the scratch */
    int fd;                  /* written in the GIL-free pass when >= 0 */
    size_t done;
    int err;
    int flags;
    PyObject *error;
} job_t;

#define NOT_WRITTEN ((size_t)-1)     /* job_t.done of a job with a descriptor, until written */

/* put() for every job still NOT_WRITTEN.  Touches no Python object: runs without the GIL. */
static void
put_rest(job_t *jobs, Py_ssize_t count, const uint8_t *buf)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        job_t *j = &jobs[i];
        if (j->fd >= 0 && j->done == NOT_WRITTEN)
            j->done = put(j->fd, buf + j->at, j->n, &j->err);
    }
}

#ifdef HAVE_LIBURING
/* put() for every job with a descriptor, through the ring: up to RING_ENTRIES sends
   submitted at once, all reaped before the next ones (a job's buffer stays the
   scratch's until then); a short send's rest, and any send the ring did not take or
   report, written by put() (then the ring is not used again: it may hold entries the
   kernel did not consume).  Touches no Python object: runs without the GIL. */
static void
put_all_uring(struct io_uring *r, job_t *jobs, Py_ssize_t count, const uint8_t *buf)
{
    Py_ssize_t i = 0;
    while (i < count) {
        unsigned queued = 0;
        for (; i < count && queued < RING_ENTRIES; i++) {
            job_t *j = &jobs[i];
            if (j->fd < 0)
                continue;
            struct io_uring_sqe *sqe = io_uring_get_sqe(r);
            if (sqe == NULL)
                break;
            io_uring_prep_send(sqe, j->fd, buf + j->at, j->n, MSG_DONTWAIT | MSG_NOSIGNAL);
            io_uring_sqe_set_data64(sqe, (unsigned long long)i);
            queued++;
        }
        int submitted = queued ? io_uring_submit(r) : 0;
        while (submitted == -EINTR)
            submitted = io_uring_submit(r);
        unsigned reaped = 0;
        while (submitted > 0 && reaped < (unsigned)submitted) {
            struct io_uring_cqe *cqe;
            int e = io_uring_wait_cqe(r, &cqe);
            if (e == -EINTR)
                continue;
            if (e < 0)
                break;
            job_t *j = &jobs[io_uring_cqe_get_data64(cqe)];
            int res = cqe->res;
            io_uring_cqe_seen(r, cqe);
            reaped++;
            if (res < 0) {
                j->done = 0;
                j->err = -res;
                if (-res == EINTR || -res == ENOTSOCK)   /* as put() retries it; a pipe: write(2) */
                    j->done = put(j->fd, buf + j->at, j->n, &j->err);
            }
            else {
                size_t k = (size_t)res;
                j->err = 0;
                j->done = k;
                if (k < j->n)                    /* the rest, as put() would go on */
                    j->done = k + put(j->fd, buf + j->at + k, j->n - k, &j->err);
            }
        }
        if (submitted < (int)queued || reaped < (unsigned)(submitted > 0 ? submitted : 0)
            || (queued == 0 && i < count)) {     /* no entry to be had: never loop on it */
            io_uring_queue_exit(r);
            ring_state = -EIO;
            break;
        }
    }
    put_rest(jobs, count, buf);
}
#endif

static int
fail(job_t *j)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL)
        return -1;
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    j->error = value;
    j->flags = F_FAILED;
    return 0;
}

static PyObject *
send_batches(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"items", "budget", NULL};
    PyObject *items;
    long long budget;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OL:send_batches", kwlist, &items, &budget))
        return NULL;
    if (!PyList_Check(items) && !PyTuple_Check(items)) {
        PyErr_Format(PyExc_TypeError, "items must be a list or a tuple, not %.100s", Py_TYPE(items)->tp_name);
        return NULL;
    }
    PyObject *seq = PySequence_Fast(items, "items must be a list or a tuple");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **objs = PySequence_Fast_ITEMS(seq);
    job_t *jobs = PyMem_Calloc(count ? (size_t)count : 1, sizeof(job_t));
    if (jobs == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    Py_ssize_t marked = 0;
    scratch s = {NULL, 0, 1};

    /* Every item an (Outbox, Wire) pair or a Lane, each wire once and not being
       written: checked before anything is taken.  A lane is unmarked here, and
       written only if its stream may take a batch now (Stream._may_take): live
       over plain TCP, something pending, websockets' state OPEN, the transport
       not closing, the wire neither blocked nor broken; else its flags say what
       the sender does instead. */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *it = objs[i];
        jobs[i].fd = -1;
        if (lane_check(it)) {
            lane_obj *l = (lane_obj *)it;
            l->dirty = 0;
            if (!l->live || l->owner == Py_None || l->outbox == NULL)
                continue;
            if (l->wire == NULL || !Py_IS_TYPE(l->wire, &WireType)) {
                jobs[i].flags = F_MARK;
                continue;
            }
            ob_state_t st;
            ob_state((ob_outbox *)l->outbox, &st);
            if (!st.pending) {
                jobs[i].flags = st.ended ? F_ENDED : 0;
                continue;
            }
            wire_obj *w = (wire_obj *)l->wire;
            int may = is_open(w) && !w->len;
            if (may) {
                PyObject *state = PyObject_GetAttr(l->protocol, str_state);
                if (state == NULL) {
                    if (fail(&jobs[i]) < 0)
                        goto done;
                    continue;
                }
                may = state == l->open_state;
                Py_DECREF(state);
            }
            if (may) {
                PyObject *closing = PyObject_CallMethodNoArgs(l->transport, str_is_closing);
                int c = closing == NULL ? -1 : PyObject_IsTrue(closing);
                Py_XDECREF(closing);
                if (c < 0) {
                    if (fail(&jobs[i]) < 0)
                        goto done;
                    continue;
                }
                may = !c;
            }
            if (!may) {
                jobs[i].flags = F_WAKE;
                continue;
            }
            if (w->busy) {
                PyErr_Format(PyExc_ValueError, "item %zd: its wire is given twice, or written by another thread", i);
                goto done;
            }
            w->busy = 1;
            marked = i + 1;
            jobs[i].w = w;
            jobs[i].ob = (ob_outbox *)l->outbox;
            continue;
        }
        if (!PyTuple_Check(it) || PyTuple_GET_SIZE(it) != 2 || !ob_check(PyTuple_GET_ITEM(it, 0))
            || !Py_IS_TYPE(PyTuple_GET_ITEM(it, 1), &WireType)) {
            PyErr_Format(PyExc_TypeError,
                         "item %zd: expected an (Outbox, Wire) pair or a Lane of rtp2ws._wsframe, not %.100s",
                         i, Py_TYPE(it)->tp_name);
            goto done;
        }
        wire_obj *w = (wire_obj *)PyTuple_GET_ITEM(it, 1);
        if (w->busy) {
            PyErr_Format(PyExc_ValueError, "item %zd: its wire is given twice, or written by another thread", i);
            goto done;
        }
        w->busy = 1;
        marked = i + 1;
        jobs[i].w = w;
        jobs[i].ob = (ob_outbox *)PyTuple_GET_ITEM(it, 0);
    }
    if (!arena_busy) {
        arena_busy = 1;
        s.buf = arena;
        s.cap = arena_cap;
        s.own = 0;
    }

    /* Take and frame every batch (with the GIL). */
    size_t used = 0;
    Py_ssize_t writes = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        job_t *j = &jobs[i];
        if (j->w == NULL)
            continue;
        ob_plan_t plan;
        if (ob_plan_checked(j->ob, budget, &plan) < 0) {
            if (fail(j) < 0)
                goto done;
            continue;
        }
        if (plan.frames) {
            size_t nk = 4 * (size_t)plan.frames;
            if (scratch_need(&s, used + plan.bytes + nk) < 0 || take_keys(s.buf + used + plan.bytes, nk) < 0) {
                ob_lose_take(j->ob, budget);        /* as take_framed without keys */
                if (fail(j) < 0)
                    goto done;
                continue;
            }
            int64_t frames;
            Py_ssize_t n = ob_take_framed(j->ob, budget, s.buf + used, plan.bytes, s.buf + used + plan.bytes, nk,
                                          &frames);
            if (n >= 0 && ((size_t)n != plan.bytes || frames != plan.frames)) {
                PyErr_Format(PyExc_SystemError, "take_framed wrote %zd bytes in %lld frames, planned %zu in %lld",
                             n, (long long)frames, plan.bytes, (long long)plan.frames);
                n = -1;
            }
            if (n < 0) {
                if (fail(j) < 0)
                    goto done;
                continue;
            }
            j->at = used;
            j->n = (size_t)n;
            used += (size_t)n;
            wire_obj *w = j->w;
            if (n && is_open(w)) {
                if (w->len) {                           /* behind what waits (Wire.write) */
                    if (tail_append(w, s.buf + j->at, j->n) < 0) {
                        if (fail(j) < 0)
                            goto done;
                        continue;
                    }
                }
                else {
                    j->fd = w->fd;
                    j->done = NOT_WRITTEN;
                    writes++;
                }
            }
        }
        ob_state_t st;
        ob_state(j->ob, &st);
        j->flags = (st.pending ? F_PENDING : st.ended ? F_ENDED : 0) | (st.sent ? F_SENT : 0);
    }

    /* Every write, without the GIL: only the scratch and the copied descriptors. */
    if (writes) {
        uint8_t *buf = s.buf;
#ifdef HAVE_LIBURING
        struct io_uring *r = ring_busy ? NULL : ring_get();
        if (r != NULL) {
            ring_busy = 1;
            uring_calls++;
            uring_sends += writes;
            Py_BEGIN_ALLOW_THREADS
            put_all_uring(r, jobs, count, buf);
            Py_END_ALLOW_THREADS
            ring_busy = 0;
        }
        else
#endif
        {
            Py_BEGIN_ALLOW_THREADS
            put_rest(jobs, count, buf);
            Py_END_ALLOW_THREADS
        }
    }

    /* What the writes did to the wires (with the GIL). */
    for (Py_ssize_t i = 0; i < count; i++) {
        job_t *j = &jobs[i];
        wire_obj *w = j->w;
        if (j->error != NULL || w == NULL)
            continue;
        if (j->fd >= 0) {
            w->written += (long long)j->done;
            if (j->err && !would_block(j->err)) {
                if (break_wire(w, j->err) < 0) {
                    if (fail(j) < 0)
                        goto done;
                    continue;
                }
                j->flags |= F_BROKE;
            }
            else if (tail_append(w, s.buf + j->at + j->done, j->n - j->done) < 0) {
                if (fail(j) < 0)
                    goto done;
                continue;
            }
        }
        if (j->n && w->len)
            j->flags |= F_BLOCKED;
    }

    result = PyList_New(0);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        job_t *j = &jobs[i];
        if (!j->flags)
            continue;
        PyObject *t = Py_BuildValue("(niO)", i, j->flags, j->error != NULL ? j->error : Py_None);
        if (t == NULL || PyList_Append(result, t) < 0) {
            Py_XDECREF(t);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(t);
    }

done:
    for (Py_ssize_t i = 0; i < marked; i++)
        if (jobs[i].w != NULL)
            jobs[i].w->busy = 0;
    for (Py_ssize_t i = 0; i < count; i++)
        Py_XDECREF(jobs[i].error);
    PyMem_Free(jobs);
    if (s.own)
        PyMem_RawFree(s.buf);
    else if (s.cap > ARENA_KEEP) {         /* a rare huge backlog: not kept for ever */
        PyMem_RawFree(s.buf);
        arena = NULL;
        arena_cap = 0;
        arena_busy = 0;
    }
    else {
        arena = s.buf;
        arena_cap = s.cap;
        arena_busy = 0;
    }
    Py_DECREF(seq);
    return result;
}

static PyMethodDef wire_functions[] = {
    {"use_uring", (PyCFunction)use_uring, METH_VARARGS,
     "use_uring([on]) -> bool: turn send_batches' io_uring writes on or off; whether they are in use."},
    {"uring_info", (PyCFunction)uring_info, METH_NOARGS,
     "uring_info() -> dict: state ('on', 'off', 'not made yet', 'refused', 'not built'), error (the errno\n"
     "the kernel refused the ring with), sends and calls that went through it."},
    {"send_batches", (PyCFunction)(void (*)(void))send_batches, METH_VARARGS | METH_KEYWORDS,
     "send_batches(items, budget) -> list[(index, flags, error)]\n\n"
     "Each (Outbox, Wire) pair's (or Lane's) batch of up to about budget bytes, framed and written to its wire;\n"
     "the items the caller must still act on (rtp2ws.ws.wire.send_batches_py is the twin)."},
    {NULL, NULL, 0, NULL},
};

int
wire_module_init(PyObject *m)
{
    const char *no = getenv("RTP2WS_NO_URING");
    if (no != NULL && *no && strcmp(no, "0") != 0)
        uring_wanted = 0;
    str_state = PyUnicode_InternFromString("_state");
    str_is_closing = PyUnicode_InternFromString("is_closing");
    if (str_state == NULL || str_is_closing == NULL)
        return -1;
    if (PyType_Ready(&WireType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Wire", (PyObject *)&WireType) < 0)
        return -1;
    if (PyModule_AddFunctions(m, wire_functions) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "PENDING", F_PENDING) < 0 || PyModule_AddIntConstant(m, "ENDED", F_ENDED) < 0
        || PyModule_AddIntConstant(m, "BLOCKED", F_BLOCKED) < 0 || PyModule_AddIntConstant(m, "BROKE", F_BROKE) < 0
        || PyModule_AddIntConstant(m, "SENT", F_SENT) < 0 || PyModule_AddIntConstant(m, "FAILED", F_FAILED) < 0
        || PyModule_AddIntConstant(m, "WAKE", F_WAKE) < 0 || PyModule_AddIntConstant(m, "MARK", F_MARK) < 0
        || PyModule_AddIntConstant(m, "KEY_POOL", KEY_POOL) < 0)
        return -1;
    return 0;
}
