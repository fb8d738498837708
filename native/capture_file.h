/*
 * The capture file reader of rtp2ws._fastpath (native/capture_file.c), as FastPath.run
 * (native/fastpath.c) reads it: a packet at a time, never handed to Python.  Its Python
 * twin is rtp2ws.capture.file.Reader.
 */
#ifndef RTP2WS_CAPTURE_FILE_H
#define RTP2WS_CAPTURE_FILE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pcap/pcap.h>
#include <stdint.h>

typedef struct {
    PyObject_HEAD
    pcap_t *pcap;                 /* NULL once closed or at the end of the file */
    long long packets_read;
    long end_pos;                 /* file position when libpcap reached the end */
    int linktype;
    char *error;                  /* a read error kept back until a tick was returned */
    double last_ts;               /* time given to the last packet read */
    long long bad_timestamps;     /* packets whose time was outside 0..MAX_TIMESTAMP */
    long long first_bad_timestamp;    /* number of the first of them (1-based), 0: none */
    /* a packet read and handed back (capture_reader_hold): the next one read (paced runs) */
    int held;
    double held_ts;
    const uint8_t *held_data;     /* libpcap's buffer: valid until the next read, which returns it */
    Py_ssize_t held_len;
    /* a live handle (LiveReader, native/capture_live.c): a read that finds the ring empty is
     * not the end */
    int live;
    int waiting;                  /* the last read found no packet (live) */
    int usec;                     /* tv_usec holds microseconds (a live interface without nanoseconds) */
    long long nbytes;             /* bytes of the packets read (live) */
} Reader;

extern PyTypeObject capture_ReaderType;
extern PyObject *capture_ReadError;

/* The next packet: 1 with *ts, *data and *len set (valid until the next call); 0 at the
 * end of the file (the handle is closed) or when the capture broke off (the error is kept
 * back in r->error for capture_reader_raise); 2 when a live handle has no packet now
 * (r->waiting); -1 with a Python exception set.  As rtp2ws.capture.file.Reader.next_packet
 * and rtp2ws.capture.live.LiveReaderPy.next_packet. */
int capture_reader_next(Reader *r, double *ts, const uint8_t **data, Py_ssize_t *len);

/* The packet capture_reader_next just returned is read again by its next call (nothing is
 * read from the file in between). */
void capture_reader_hold(Reader *r, double ts, const uint8_t *data, Py_ssize_t len);

/* Raise the kept-back read error as ReadError (once) and return -1; 0 when there is none. */
int capture_reader_raise(Reader *r);

/* Add Reader and ReadError to the module. */
int capture_file_add(PyObject *module);

/* Add LiveReader (native/capture_live.c) to the module, after capture_file_add. */
int capture_live_add(PyObject *module);

#endif
