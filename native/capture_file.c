/*
 * rtp2ws._fastpath.Reader: a capture file opened with libpcap for the fast path.
 *
 *   Reader(path)   pcap_open_offline (nanosecond precision, as pypcap opens files, so
 *                  both readers see the same times).  FastPath.run (native/fastpath.c)
 *                  reads its packets with capture_reader_next; Python never sees them
 *                  one by one unless the fast path hands one back.
 *
 * The Python twin is rtp2ws.capture.file.Reader (over CaptureFile); the same tests run
 * against both.  It is built into the _fastpath extension because FastPath.run reads the
 * libpcap handle directly.
 */
#include "capture_file.h"

#include <structmember.h>

#include <stdio.h>
#include <string.h>

/* latest capture time taken as it is: 9999-12-31T23:59:59Z (rtp2ws.capture.file.MAX_TIMESTAMP) */
#define MAX_TIMESTAMP 253402300799.0

PyObject *capture_ReadError;

static int
Reader_init(Reader *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", NULL};
    PyObject *path_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&", kwlist, PyUnicode_FSConverter, &path_obj))
        return -1;
    char errbuf[PCAP_ERRBUF_SIZE + 1] = {0};
    pcap_t *p = pcap_open_offline_with_tstamp_precision(PyBytes_AS_STRING(path_obj),
                                                         PCAP_TSTAMP_PRECISION_NANO, errbuf);
    Py_DECREF(path_obj);
    if (p == NULL) {
        PyErr_SetString(PyExc_OSError, errbuf);
        return -1;
    }
    if (self->pcap != NULL)
        pcap_close(self->pcap);
    self->pcap = p;
    self->linktype = pcap_datalink(p);
    self->packets_read = 0;
    self->bad_timestamps = 0;
    self->first_bad_timestamp = 0;
    return 0;
}

static void
Reader_close_handle(Reader *self)
{
    if (self->pcap != NULL) {
        pcap_close(self->pcap);
        self->pcap = NULL;
    }
    PyMem_Free(self->error);
    self->error = NULL;
}

static void
Reader_dealloc(Reader *self)
{
    Reader_close_handle(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Reader_close(Reader *self, PyObject *unused)
{
    (void)unused;
    Reader_close_handle(self);
    Py_RETURN_NONE;
}

static PyObject *
Reader_bytes_read(Reader *self, void *closure)
{
    (void)closure;
    if (self->pcap == NULL)
        return PyLong_FromLong(self->end_pos);
    FILE *f = pcap_file(self->pcap);
    return PyLong_FromLong(f != NULL ? ftell(f) : 0);
}

int
capture_reader_next(Reader *r, double *ts_out, const uint8_t **data_out, Py_ssize_t *len_out)
{
    if (r->held) {
        r->held = 0;
        *ts_out = r->held_ts;
        *data_out = r->held_data;
        *len_out = r->held_len;
        return 1;
    }
    if (r->pcap == NULL)
        return 0;
    struct pcap_pkthdr *hdr;
    const u_char *data;
    int rc = pcap_next_ex(r->pcap, &hdr, &data);
    if (rc != 1) {
        if (rc == 0 && r->live) {         /* non-blocking: the ring is empty now */
            r->waiting = 1;
            return 2;
        }
        if (rc == PCAP_ERROR) {
            const char *msg = pcap_geterr(r->pcap);
            size_t n = strlen(msg) + 1;
            r->error = PyMem_Malloc(n);
            if (r->error == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            memcpy(r->error, msg, n);
        } else {
            FILE *f = pcap_file(r->pcap);     /* end of file */
            r->end_pos = f != NULL ? ftell(f) : 0;
            pcap_close(r->pcap);
            r->pcap = NULL;
        }
        return 0;
    }
    r->packets_read++;
    r->waiting = 0;
    r->nbytes += hdr->caplen;
    /* tv_usec holds nanoseconds here (microseconds for a live handle without nanosecond
       stamps); as pypcap computes it, a multiplication by 1e-9 (1e-6), so both readers give
       the same float: a division by 1e9 differs in the last bit for some values (0.06 s:
       0.06 against pypcap's 0.060000000000000005), which moved the interarrival jitter of
       packets the fast path took by as much */
    double ts = (double)hdr->ts.tv_sec + (double)hdr->ts.tv_usec * (r->usec ? 1e-6 : 1e-9);
    if (!(ts >= 0.0 && ts <= MAX_TIMESTAMP)) {   /* as rtp2ws.capture.file.CaptureFile.batches */
        if (r->bad_timestamps++ == 0)
            r->first_bad_timestamp = r->packets_read;
        ts = r->packets_read > 1 ? r->last_ts : ts > 0.0 ? MAX_TIMESTAMP : 0.0;
    }
    r->last_ts = ts;
    *ts_out = ts;
    *data_out = data;
    *len_out = (Py_ssize_t)hdr->caplen;
    return 1;
}

void
capture_reader_hold(Reader *r, double ts, const uint8_t *data, Py_ssize_t len)
{
    r->held = 1;
    r->held_ts = ts;
    r->held_data = data;
    r->held_len = len;
}

static PyObject *
Reader_held_ts(Reader *r, void *closure)
{
    (void)closure;
    if (!r->held)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(r->held_ts);
}

int
capture_reader_raise(Reader *r)
{
    if (r->error == NULL)
        return 0;
    PyErr_SetString(capture_ReadError, r->error);
    PyMem_Free(r->error);
    r->error = NULL;
    return -1;
}

static PyMethodDef Reader_methods[] = {
    {"close", (PyCFunction)Reader_close, METH_NOARGS, "Close the capture file."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Reader_members[] = {
    {"packets_read", T_LONGLONG, offsetof(Reader, packets_read), READONLY, "packets read so far"},
    {"linktype", T_INT, offsetof(Reader, linktype), READONLY, "pcap_datalink() of the file"},
    {"bad_timestamps", T_LONGLONG, offsetof(Reader, bad_timestamps), READONLY,
     "packets whose time was outside 1970..9999 and was replaced"},
    {"first_bad_timestamp", T_LONGLONG, offsetof(Reader, first_bad_timestamp), READONLY,
     "number of the first such packet (1-based), 0 for none"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Reader_getset[] = {
    {"bytes_read", (getter)Reader_bytes_read, NULL, "position in the file", NULL},
    {"held_ts", (getter)Reader_held_ts, NULL,
     "capture time of the packet a paced run stopped before (read next), or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject capture_ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rtp2ws._fastpath.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,    /* LiveReader (native/capture_live.c) */
    .tp_doc = "Reader(path): a pcap or pcapng file opened with libpcap, read by FastPath.run.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_methods = Reader_methods,
    .tp_members = Reader_members,
    .tp_getset = Reader_getset,
};

int
capture_file_add(PyObject *m)
{
    if (PyType_Ready(&capture_ReaderType) < 0)
        return -1;
    capture_ReadError = PyErr_NewException("rtp2ws._fastpath.ReadError", NULL, NULL);
    if (capture_ReadError == NULL || PyModule_AddObjectRef(m, "ReadError", capture_ReadError) < 0
        || PyModule_AddObjectRef(m, "Reader", (PyObject *)&capture_ReaderType) < 0)
        return -1;
    return 0;
}
