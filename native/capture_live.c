/*
 * rtp2ws._fastpath.LiveReader: a network interface opened with libpcap for the fast path.
 *
 *   LiveReader(interface, snaplen, promisc, buffer_size)
 *                  pcap_create + pcap_activate (buffered: TPACKET_V3 blocks handed over
 *                  at the latest RETIRE_MS after their first packet; nanosecond
 *                  timestamps; non-blocking), as rtp2ws.capture.live opens an interface.  FastPath.run
 *                  (native/fastpath.c) reads it in the decoder's thread with
 *                  capture_reader_next, which answers 2 (``waiting``) when the kernel's
 *                  ring holds no packet: the caller waits on ``fileno()`` and reads again.
 *                  No packet becomes a Python object unless the fast path hands it back.
 *
 * A subtype of Reader (native/capture_file.c): the same reading, holding and error
 * keeping.  The Python twin is rtp2ws.capture.live.LiveReaderPy (pypcap); the same tests
 * run against both.
 */
#include "capture_file.h"

#include <structmember.h>

#include <string.h>

/* libpcap's buffer timeout.  Not immediate mode: on Linux that means TPACKET_V2, where
 * every packet takes a ring slot as big as the snapshot length (64 KiB on an interface
 * with GRO or TSO: a 64 MiB ring held 1,024 packets, 25 ms of 400 calls); buffered
 * mode packs packets at their own length in TPACKET_V3 blocks (the same ring holds
 * about 200,000), and hands each block over when full or RETIRE_MS after it opened. */
#define RETIRE_MS 1

static PyObject *
open_error(pcap_t *p, int rc)
{
    /* libpcap's own words where it has some (pcap_geterr), else the status's name;
     * rtp2ws.capture.live._open_error turns them into advice */
    const char *msg = p != NULL ? pcap_geterr(p) : NULL;
    if (msg == NULL || msg[0] == '\0')
        msg = pcap_statustostr(rc);
    PyErr_SetString(PyExc_OSError, msg);
    return NULL;
}

static int
LiveReader_init(Reader *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"interface", "snaplen", "promisc", "buffer_size", NULL};
    const char *name;
    int snaplen = 65535, promisc = 1, buffer_size = 64 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|ipi", kwlist, &name, &snaplen, &promisc, &buffer_size))
        return -1;
    if (self->pcap != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "LiveReader is open already");
        return -1;
    }
    char errbuf[PCAP_ERRBUF_SIZE + 1] = {0};
    pcap_t *p = pcap_create(name, errbuf);
    if (p == NULL) {
        PyErr_SetString(PyExc_OSError, errbuf);
        return -1;
    }
    int rc;
    if ((rc = pcap_set_snaplen(p, snaplen)) != 0 || (rc = pcap_set_promisc(p, promisc)) != 0
        || (rc = pcap_set_timeout(p, RETIRE_MS)) != 0
        || (rc = pcap_set_buffer_size(p, buffer_size)) != 0) {
        open_error(p, rc);
        pcap_close(p);
        return -1;
    }
    /* nanoseconds, as the file reader reads them (capture_reader_next); where the
     * interface has only microseconds, pcap_set_tstamp_precision refuses and they stay */
    int nano = pcap_set_tstamp_precision(p, PCAP_TSTAMP_PRECISION_NANO) == 0;
    rc = pcap_activate(p);
    if (rc < 0) {
        open_error(p, rc);
        pcap_close(p);
        return -1;
    }
    if (pcap_setnonblock(p, 1, errbuf) < 0) {
        PyErr_SetString(PyExc_OSError, errbuf);
        pcap_close(p);
        return -1;
    }
    self->pcap = p;
    self->live = 1;
    self->usec = !nano;
    self->linktype = pcap_datalink(p);
    return 0;
}

static PyObject *
closed_error(void)
{
    PyErr_SetString(PyExc_ValueError, "the capture is closed");
    return NULL;
}

static PyObject *
LiveReader_setfilter(Reader *self, PyObject *args)
{
    const char *text;
    if (!PyArg_ParseTuple(args, "s:setfilter", &text))
        return NULL;
    if (self->pcap == NULL)
        return closed_error();
    struct bpf_program prog;
    if (pcap_compile(self->pcap, &prog, text, 1, PCAP_NETMASK_UNKNOWN) < 0) {
        PyErr_SetString(PyExc_OSError, pcap_geterr(self->pcap));
        return NULL;
    }
    int rc = pcap_setfilter(self->pcap, &prog);
    pcap_freecode(&prog);
    if (rc < 0) {
        PyErr_SetString(PyExc_OSError, pcap_geterr(self->pcap));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
LiveReader_fileno(Reader *self, PyObject *unused)
{
    (void)unused;
    if (self->pcap == NULL)
        return closed_error();
    return PyLong_FromLong(pcap_get_selectable_fd(self->pcap));
}

static PyObject *
LiveReader_stats(Reader *self, PyObject *unused)
{
    (void)unused;
    if (self->pcap == NULL)
        return closed_error();
    struct pcap_stat st;
    if (pcap_stats(self->pcap, &st) < 0) {
        PyErr_SetString(PyExc_OSError, pcap_geterr(self->pcap));
        return NULL;
    }
    return Py_BuildValue("(kkk)", (unsigned long)st.ps_recv, (unsigned long)st.ps_drop,
                         (unsigned long)st.ps_ifdrop);
}

static PyObject *
LiveReader_get_waiting(Reader *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->waiting);
}

static PyObject *
LiveReader_get_closed(Reader *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->pcap == NULL);
}

static PyMethodDef LiveReader_methods[] = {
    {"setfilter", (PyCFunction)LiveReader_setfilter, METH_VARARGS,
     "setfilter(text): compile and apply a tcpdump-syntax filter (OSError with libpcap's message)"},
    {"fileno", (PyCFunction)LiveReader_fileno, METH_NOARGS,
     "fileno() -> the descriptor that polls readable when the ring holds a packet"},
    {"stats", (PyCFunction)LiveReader_stats, METH_NOARGS,
     "stats() -> (received, dropped, interface_dropped): libpcap's 32-bit counters"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef LiveReader_members[] = {
    {"bytes", T_LONGLONG, offsetof(Reader, nbytes), READONLY, "bytes of the packets read"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef LiveReader_getset[] = {
    {"waiting", (getter)LiveReader_get_waiting, NULL, "the last read found no packet in the ring", NULL},
    {"closed", (getter)LiveReader_get_closed, NULL, "closed, or broken off", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LiveReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rtp2ws._fastpath.LiveReader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "LiveReader(interface, snaplen=65535, promisc=True, buffer_size=64 MiB): a network interface\n"
              "opened with libpcap (buffered, 1 ms block timeout, non-blocking), read by FastPath.run.",
    .tp_init = (initproc)LiveReader_init,
    .tp_methods = LiveReader_methods,
    .tp_members = LiveReader_members,
    .tp_getset = LiveReader_getset,
};

int
capture_live_add(PyObject *m)
{
    LiveReaderType.tp_base = &capture_ReaderType;
    LiveReaderType.tp_new = PyType_GenericNew;
    if (PyType_Ready(&LiveReaderType) < 0
        || PyModule_AddObjectRef(m, "LiveReader", (PyObject *)&LiveReaderType) < 0)
        return -1;
    return 0;
}
