/*
 * rtp2ws._fastpath: the RTP hot loop in C, a capture file at a time.
 *
 *   FastPath(link, deliver_samples, alaw_table, ulaw_table, phases=None, frac_bits=0)
 *                  reads packets from a Reader (run; native/capture_file.c), or from a
 *                  list of (ts, frame) a live capture made (feed), and takes the ones that
 *                  need no decision: RTP on a flow the pipeline has *armed*, with
 *                  the SSRC, payload type, sequence number and timestamp the
 *                  leg expects next, arriving on time.  Their payloads go on
 *                  the end of the flow's buffer, decoded (G.711 table look-up)
 *                  into 8 kHz samples when Python takes them.  Any other
 *                  packet ends the run and goes back to Python, which gives
 *                  it to the ordinary pipeline.  A slot can be bound (bind) to
 *                  a stream that takes whole frames of its leg: pump() then
 *                  decodes, runs the 2x filter (native/resample.c, the taps
 *                  given as phases) and cuts the frames itself.  A flow can
 *                  also be ignored (ignore: a leg of a call another worker owns,
 *                  rtp2ws.pipeline.shard): its RTP packets are counted, their
 *                  newest capture time kept, and dropped (ignored reads that).
 *                  Each slot measures the RFC 3550 interarrival jitter of the packets
 *                  it takes exactly as rtp2ws.media.leg does (its docstring), and
 *                  the leg's max delta as rtp2ws.media.quality does, from the state
 *                  arm is given; take hands them back.
 *
 * ``link`` is rtp2ws.net.packet's LinkLayer for the capture's link type, (kind, header,
 * type_at, vlans): packet.py's LINK_TYPES is the one table of link types, and this file
 * knows only its kinds (link_header).
 *
 * rtp2ws/fastpath/twin.py is the pure-Python twin and explains the contract: what
 * "armed" means, what each counter is, and why the result is exactly what the
 * packet-at-a-time pipeline would have produced; rtp2ws/fastpath/driver.py drives it
 * for the pipeline.  The same tests run against both.  See docs/ARCHITECTURE.md.
 */
#include "capture_file.h"
#include "lane.h"
#include "native.h"

#include <structmember.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_PAYLOAD 1024          /* longest payload taken here (128 ms of G.711) */
#define KEY_LEN 37                /* family, src[16], dst[16], sport, dport */
#define RESYNC_SAMPLES 4000.0     /* rtp2ws.media.leg.RESYNC_SECONDS * CLOCK */
#define HIST_MAX 256              /* the 2x filter's state: at most K - 1 samples */
#define CODES_MIN 512             /* a slot's first buffer of G.711 bytes: 64 ms (grows by doubling) */
#define VXLAN_PORT 4789           /* rtp2ws.net.packet.VXLAN_PORT */

/* run() results other than a slow packet */
#define RUN_EOF 0
#define RUN_TICK 1
#define RUN_PAUSE 2
#define RUN_IDLE 3                /* a live reader has no packet now (reader.waiting) */

/* rtp2ws.net.packet's LINK_* kinds: how to find the IP header */
enum { LINK_ETHERTYPE = 1, LINK_IP, LINK_IPV4, LINK_IPV6, LINK_AF, LINK_AF_NET };

static const struct {
    const char *name;             /* as packet.py names the kind */
    int kind;
    int field;                    /* bytes read at type_at */
} link_kinds[] = {
    {"ethertype", LINK_ETHERTYPE, 2},
    {"ip", LINK_IP, 0},
    {"ipv4", LINK_IPV4, 0},
    {"ipv6", LINK_IPV6, 0},
    {"af", LINK_AF, 4},
    {"af_net", LINK_AF_NET, 4},
};

typedef struct {
    int kind;
    Py_ssize_t header;            /* bytes before the IP header (VLAN tags not counted) */
    Py_ssize_t type_at;           /* where the EtherType or address family is */
    int vlans;                    /* VLAN tags may follow the header */
} Link;

/* ---- FastPath ---------------------------------------------------------- */

typedef struct {
    int armed;
    uint32_t ssrc;
    uint16_t next_seq;            /* low 16 bits of next_ext */
    int64_t next_ext;             /* extended sequence number expected next */
    uint8_t pt;
    const int16_t *table;         /* A-law or µ-law */
    uint32_t expect_ts;           /* RTP timestamp that continues the timeline with no gap */
    uint32_t last_ts32;
    int64_t last_ts_ext;
    double last_arrival;
    double max_arrival;
    int64_t packets;              /* taken since the last take() */
    int64_t nbytes;
    Py_ssize_t last_n;
    uint8_t *codes;               /* G.711 bytes taken, decoded only when taken (half the memory) */
    Py_ssize_t nsamples, cap;
    int64_t base;                 /* 8 kHz samples the leg held before these */
    int ready;
    Py_ssize_t entry;             /* index of the flow in the hash table */
    /* bound: the fast path streams the leg itself (bind, pump) */
    int bound;
    int16_t hist[HIST_MAX];       /* the 2x filter's state */
    Py_ssize_t nhist;
    uint8_t *carry;               /* 16 kHz int16 of less than a frame (frame_bytes allocated) */
    Py_ssize_t ncarry, frame_bytes;
    int64_t streamed;             /* 8 kHz samples streamed since the last take */
    uint8_t last_codes[MAX_PAYLOAD];   /* the last packet's payload, once pumped */
    Py_ssize_t nlast;
    PyObject *lane;               /* bound with a lane: pump() pushes its frames there (a reference) */
    /* the leg's interarrival jitter (rtp2ws.media.leg.Jitter), RTP timestamp units */
    double jitter;                /* J after the last packet */
    double jitter_total;          /* J summed over the packets counted (no marker bit) */
    int64_t jitter_counted;
    double jitter_peak;           /* the largest J counted */
    /* the leg's max delta (rtp2ws.media.quality.Delta) */
    double delta_ref;             /* capture time of the reference packet */
    uint32_t delta_ts;            /* its RTP timestamp */
    double delta_peak;            /* the largest delta counted, seconds (-inf: none) */
} Slot;

/* an ignored flow (a foreign call's): what was dropped on it since the last look */
typedef struct {
    int used;
    int64_t packets;
    double newest;                /* -inf: none */
    Py_ssize_t entry;             /* index of the flow in the hash table */
} Foreign;

typedef struct {
    uint8_t key[KEY_LEN];
    uint8_t state;                /* 0 empty, 1 in use, 2 deleted */
    int32_t sid;                  /* an armed slot's id; an ignored flow's is -1 - its id */
} Entry;

typedef struct {
    PyObject_HEAD
    Link link;
    int64_t deliver;              /* a slot is ready once base + samples reach this */
    int16_t alaw[256];
    int16_t ulaw[256];
    Slot *slots;
    Py_ssize_t nslots, slots_cap;
    int32_t *free_sids;
    Py_ssize_t nfree;
    Entry *table;
    Py_ssize_t table_cap, table_used;   /* used counts deleted entries too */
    int32_t *ready;
    Py_ssize_t nready, ready_cap;
    long long packets;            /* packets taken here in all */
    long long since_tick;
    double now;                   /* latest capture time seen here */
    int32_t *phases;              /* the 2x filter's taps (2 * K), for bound slots */
    Py_ssize_t K;
    int frac_bits;
    int16_t *x16;                 /* pump scratch: decoded input, filtered output */
    uint8_t *out;                 /* ... and whole frames: a carry and the filtered output */
    Py_ssize_t scratch_cap;       /* input samples the scratch holds */
    Py_ssize_t out_cap;           /* the largest carry (frame_bytes) out was sized for */
    Foreign *foreign;             /* ignored flows, by id */
    Py_ssize_t nforeign, foreign_cap;
    int32_t *free_fids;
    Py_ssize_t nfree_fids;
    long long dropped;            /* packets dropped on ignored flows, in all (``foreign``) */
} FastPath;

static uint64_t
hash_key(const uint8_t *k)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < KEY_LEN; i++) {
        h ^= k[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static int
make_key(uint8_t *key, const uint8_t *src, const uint8_t *dst, int iplen, unsigned sport, unsigned dport)
{
    memset(key, 0, KEY_LEN);
    key[0] = (uint8_t)iplen;
    memcpy(key + 1, src, iplen);
    memcpy(key + 17, dst, iplen);
    key[33] = (uint8_t)(sport >> 8);
    key[34] = (uint8_t)sport;
    key[35] = (uint8_t)(dport >> 8);
    key[36] = (uint8_t)dport;
    return 0;
}

static Py_ssize_t
table_find(FastPath *fp, const uint8_t *key)
{
    if (fp->table_cap == 0)
        return -1;
    Py_ssize_t mask = fp->table_cap - 1;
    Py_ssize_t i = (Py_ssize_t)(hash_key(key) & (uint64_t)mask);
    for (;;) {
        Entry *e = &fp->table[i];
        if (e->state == 0)
            return -1;
        if (e->state == 1 && memcmp(e->key, key, KEY_LEN) == 0)
            return i;
        i = (i + 1) & mask;
    }
}

static int
table_grow(FastPath *fp)
{
    Py_ssize_t live = 0;
    for (Py_ssize_t i = 0; i < fp->table_cap; i++)
        live += fp->table[i].state == 1;
    Py_ssize_t cap = 64;          /* sized for what is live: deleted entries are dropped */
    while ((live + 1) * 4 >= cap)
        cap *= 2;
    Entry *t = PyMem_Calloc((size_t)cap, sizeof(Entry));
    if (t == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < fp->table_cap; i++) {
        Entry *e = &fp->table[i];
        if (e->state != 1)
            continue;
        Py_ssize_t j = (Py_ssize_t)(hash_key(e->key) & (uint64_t)(cap - 1));
        while (t[j].state != 0)
            j = (j + 1) & (cap - 1);
        t[j] = *e;
        if (e->sid >= 0)
            fp->slots[e->sid].entry = j;
        else
            fp->foreign[-1 - e->sid].entry = j;
    }
    PyMem_Free(fp->table);
    fp->table = t;
    fp->table_cap = cap;
    fp->table_used = live;
    return 0;
}

/* Put key in the table for slot sid (a foreign flow: -1 - its id), in its first free or
 * deleted place; the caller made room (table_grow).  Returns the place. */
static Py_ssize_t
table_put(FastPath *fp, const uint8_t *key, int32_t sid)
{
    Py_ssize_t mask = fp->table_cap - 1;
    Py_ssize_t i = (Py_ssize_t)(hash_key(key) & (uint64_t)mask);
    while (fp->table[i].state == 1)
        i = (i + 1) & mask;
    if (fp->table[i].state == 0)
        fp->table_used++;
    memcpy(fp->table[i].key, key, KEY_LEN);
    fp->table[i].state = 1;
    fp->table[i].sid = sid;
    return i;
}

static int
alloc_sid(FastPath *fp)
{
    if (fp->nfree > 0)
        return fp->free_sids[--fp->nfree];
    if (fp->nslots == fp->slots_cap) {
        Py_ssize_t cap = fp->slots_cap ? fp->slots_cap * 2 : 64;
        Slot *s = PyMem_Realloc(fp->slots, (size_t)cap * sizeof(Slot));
        if (s == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        int32_t *f = PyMem_Realloc(fp->free_sids, (size_t)cap * sizeof(int32_t));
        if (f == NULL) {
            fp->slots = s;
            PyErr_NoMemory();
            return -1;
        }
        memset(s + fp->slots_cap, 0, (size_t)(cap - fp->slots_cap) * sizeof(Slot));
        fp->slots = s;
        fp->free_sids = f;
        fp->slots_cap = cap;
    }
    return (int)fp->nslots++;
}

static int
FastPath_init(FastPath *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"link", "deliver_samples", "alaw_table", "ulaw_table", "phases", "frac_bits", NULL};
    const char *kind_name;
    Py_ssize_t header, type_at;
    int vlans;
    long long deliver;
    Py_buffer alaw, ulaw, phases = {0};
    int frac_bits = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "(snnp)Ly*y*|y*i", kwlist, &kind_name, &header, &type_at, &vlans,
                                     &deliver, &alaw, &ulaw, &phases, &frac_bits))
        return -1;
    if (phases.buf != NULL) {
        Py_ssize_t K = phases.len / (2 * (Py_ssize_t)sizeof(int32_t));
        int bad = phases.len <= 0 || phases.len % (2 * (Py_ssize_t)sizeof(int32_t)) != 0 || K > HIST_MAX + 1
            || frac_bits < 1 || frac_bits > 48;
        if (!bad) {
            PyMem_Free(self->phases);
            self->phases = PyMem_Malloc((size_t)phases.len);
            if (self->phases == NULL) {
                PyBuffer_Release(&phases);
                PyBuffer_Release(&alaw);
                PyBuffer_Release(&ulaw);
                PyErr_NoMemory();
                return -1;
            }
            memcpy(self->phases, phases.buf, (size_t)phases.len);
            self->K = K;
            self->frac_bits = frac_bits;
        }
        PyBuffer_Release(&phases);
        if (bad) {
            PyBuffer_Release(&alaw);
            PyBuffer_Release(&ulaw);
            PyErr_SetString(PyExc_ValueError, "phases: 2*K int32 taps (K <= 257), frac_bits in 1..48");
            return -1;
        }
    }
    int kind = 0, field = 0;
    for (size_t i = 0; i < sizeof(link_kinds) / sizeof(link_kinds[0]); i++)
        if (strcmp(kind_name, link_kinds[i].name) == 0) {
            kind = link_kinds[i].kind;
            field = link_kinds[i].field;
        }
    if (kind == 0 || header < 0 || header > 0xFFFF || type_at < 0 || type_at + field > header) {
        PyBuffer_Release(&alaw);
        PyBuffer_Release(&ulaw);
        if (kind == 0)
            PyErr_Format(PyExc_ValueError, "unknown link kind '%s'", kind_name);
        else
            PyErr_SetString(PyExc_ValueError, "link header fields out of range");
        return -1;
    }
    int ok = alaw.len == 512 && ulaw.len == 512;
    if (ok) {
        memcpy(self->alaw, alaw.buf, 512);
        memcpy(self->ulaw, ulaw.buf, 512);
    }
    PyBuffer_Release(&alaw);
    PyBuffer_Release(&ulaw);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "G.711 tables must be 256 int16 samples each");
        return -1;
    }
    self->link.kind = kind;
    self->link.header = header;
    self->link.type_at = type_at;
    self->link.vlans = vlans;
    self->deliver = deliver;
    return 0;
}

static void
FastPath_dealloc(FastPath *self)
{
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        PyMem_Free(self->slots[i].codes);
        PyMem_Free(self->slots[i].carry);
        Py_XDECREF(self->slots[i].lane);
    }
    PyMem_Free(self->phases);
    PyMem_Free(self->x16);
    PyMem_Free(self->out);
    PyMem_Free(self->slots);
    PyMem_Free(self->free_sids);
    PyMem_Free(self->table);
    PyMem_Free(self->ready);
    PyMem_Free(self->foreign);
    PyMem_Free(self->free_fids);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
ip_arg(PyObject *obj, Py_buffer *buf)
{
    if (PyObject_GetBuffer(obj, buf, PyBUF_SIMPLE) < 0)
        return -1;
    if (buf->len != 4 && buf->len != 16) {
        PyBuffer_Release(buf);
        PyErr_SetString(PyExc_ValueError, "an IP address is 4 or 16 bytes");
        return -1;
    }
    return 0;
}

/* The table key of the flow src:sport -> dst:dport (Python arguments); -1 with an exception set. */
static int
flow_key(uint8_t *key, PyObject *src_obj, unsigned sport, PyObject *dst_obj, unsigned dport)
{
    Py_buffer src, dst;
    if (ip_arg(src_obj, &src) < 0)
        return -1;
    if (ip_arg(dst_obj, &dst) < 0) {
        PyBuffer_Release(&src);
        return -1;
    }
    int same = src.len == dst.len;
    if (same)
        make_key(key, src.buf, dst.buf, (int)src.len, sport & 0xFFFF, dport & 0xFFFF);
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    if (!same) {
        PyErr_SetString(PyExc_ValueError, "source and destination are of different IP versions");
        return -1;
    }
    return 0;
}

/* ignore(src, sport, dst, dport) -> id: drop the flow's RTP packets from now on */
static PyObject *
FastPath_ignore(FastPath *self, PyObject *args)
{
    PyObject *src_obj, *dst_obj;
    unsigned int sport, dport;
    if (!PyArg_ParseTuple(args, "OIOI", &src_obj, &sport, &dst_obj, &dport))
        return NULL;
    uint8_t key[KEY_LEN];
    if (flow_key(key, src_obj, sport, dst_obj, dport) < 0)
        return NULL;
    if (table_find(self, key) >= 0) {
        PyErr_SetString(PyExc_ValueError, "flow is already armed");
        return NULL;
    }
    if ((self->table_used + 1) * 2 > self->table_cap && table_grow(self) < 0)
        return NULL;
    int32_t fid;
    if (self->nfree_fids > 0) {
        fid = self->free_fids[--self->nfree_fids];
    } else {
        if (self->nforeign == self->foreign_cap) {
            Py_ssize_t cap = self->foreign_cap ? self->foreign_cap * 2 : 64;
            Foreign *f = PyMem_Realloc(self->foreign, (size_t)cap * sizeof(Foreign));
            if (f == NULL)
                return PyErr_NoMemory();
            self->foreign = f;
            int32_t *free_fids = PyMem_Realloc(self->free_fids, (size_t)cap * sizeof(int32_t));
            if (free_fids == NULL)
                return PyErr_NoMemory();
            self->free_fids = free_fids;
            self->foreign_cap = cap;
        }
        fid = (int32_t)self->nforeign++;
    }
    Foreign *f = &self->foreign[fid];
    f->used = 1;
    f->packets = 0;
    f->newest = -HUGE_VAL;
    f->entry = table_put(self, key, -1 - fid);
    return PyLong_FromLong(fid);
}

/* ignored(fid, release) -> (packets, newest) dropped since the last look; release: no longer ignored */
static PyObject *
FastPath_ignored(FastPath *self, PyObject *args)
{
    int fid;
    int release;
    if (!PyArg_ParseTuple(args, "ip", &fid, &release))
        return NULL;
    if (fid < 0 || fid >= self->nforeign || !self->foreign[fid].used) {
        PyErr_Format(PyExc_KeyError, "flow %d is not ignored", fid);
        return NULL;
    }
    Foreign *f = &self->foreign[fid];
    PyObject *out = Py_BuildValue("(Ld)", (long long)f->packets, f->newest);
    if (out == NULL)
        return NULL;
    f->packets = 0;
    f->newest = -HUGE_VAL;
    if (release) {
        f->used = 0;
        self->table[f->entry].state = 2;
        self->free_fids[self->nfree_fids++] = fid;
    }
    return out;
}

/* arm(src, sport, dst, dport, ssrc, next_ext, pt, alaw, expect_ts, last_ts_ext,
 *     last_arrival, base, jitter=(0.0, 0.0, 0, 0.0), delta=(last_arrival, last_ts_ext, -inf)) -> slot id
 * jitter: the leg's (current, total, counted, peak), finite and not negative;
 * delta: its (reference time, reference RTP timestamp, peak), finite (the peak may be -inf) */
static PyObject *
FastPath_arm(FastPath *self, PyObject *args)
{
    PyObject *src_obj, *dst_obj;
    unsigned int sport, dport, ssrc, pt, expect_ts;
    long long next_ext, last_ts_ext, base;
    int alaw;
    double last_arrival;
    double jitter = 0.0, jitter_total = 0.0, jitter_peak = 0.0;
    long long jitter_counted = 0;
    double delta_ref = 0.0, delta_peak = -HUGE_VAL;
    long long delta_ts = 0;
    if (!PyArg_ParseTuple(args, "OIOIILIpILdL|(ddLd)(dLd)", &src_obj, &sport, &dst_obj, &dport, &ssrc, &next_ext,
                          &pt, &alaw, &expect_ts, &last_ts_ext, &last_arrival, &base, &jitter, &jitter_total,
                          &jitter_counted, &jitter_peak, &delta_ref, &delta_ts, &delta_peak))
        return NULL;
    if (PyTuple_GET_SIZE(args) < 14) {    /* no delta given: the last packet is the reference */
        delta_ref = last_arrival;
        delta_ts = (long long)(uint32_t)last_ts_ext;
    }
    if (!(isfinite(delta_ref) && (isfinite(delta_peak) || delta_peak == -HUGE_VAL)
          && delta_ts >= 0 && delta_ts <= 0xFFFFFFFFLL)) {
        PyErr_SetString(PyExc_ValueError,
                        "delta state must be finite (the peak may be -inf) and a 32-bit timestamp");
        return NULL;
    }
    if (!(jitter >= 0.0 && jitter < HUGE_VAL && jitter_total >= 0.0 && jitter_total < HUGE_VAL
          && jitter_peak >= 0.0 && jitter_peak < HUGE_VAL && jitter_counted >= 0)) {
        PyErr_SetString(PyExc_ValueError, "jitter state must be finite and not negative");
        return NULL;
    }
    uint8_t key[KEY_LEN];
    if (flow_key(key, src_obj, sport, dst_obj, dport) < 0)
        return NULL;
    if (table_find(self, key) >= 0) {
        PyErr_SetString(PyExc_ValueError, "flow is already armed");
        return NULL;
    }
    if ((self->table_used + 1) * 2 > self->table_cap && table_grow(self) < 0)
        return NULL;
    int sid = alloc_sid(self);
    if (sid < 0)
        return NULL;
    Slot *s = &self->slots[sid];
    uint8_t *keep = s->codes;
    Py_ssize_t keep_cap = s->cap;
    memset(s, 0, sizeof(Slot));
    s->codes = keep;
    s->cap = keep_cap;
    s->armed = 1;
    s->ssrc = ssrc;
    s->next_ext = next_ext;
    s->next_seq = (uint16_t)next_ext;
    s->pt = (uint8_t)pt;
    s->table = alaw ? self->alaw : self->ulaw;
    s->expect_ts = expect_ts;
    s->last_ts_ext = last_ts_ext;
    s->last_ts32 = (uint32_t)last_ts_ext;
    s->last_arrival = last_arrival;
    s->max_arrival = last_arrival;
    s->base = base;
    s->jitter = jitter;
    s->jitter_total = jitter_total;
    s->jitter_counted = jitter_counted;
    s->jitter_peak = jitter_peak;
    s->delta_ref = delta_ref;
    s->delta_ts = (uint32_t)delta_ts;
    s->delta_peak = delta_peak;
    s->entry = table_put(self, key, sid);
    return PyLong_FromLong(sid);
}

static Slot *
get_slot(FastPath *self, int sid)
{
    if (sid < 0 || sid >= self->nslots || !self->slots[sid].armed) {
        PyErr_Format(PyExc_KeyError, "slot %d is not armed", sid);
        return NULL;
    }
    return &self->slots[sid];
}

/* Stream a bound slot: decode what it took, filter it to 16 kHz, and put its whole
 * frames in the pump's scratch (*out, *whole bytes, possibly none), keeping the
 * part-frame for the next time; -1 with an exception set. */
static int
pump_slot(FastPath *fp, Slot *s, const uint8_t **out_p, Py_ssize_t *whole_p)
{
    Py_ssize_t n = s->nsamples;
    *out_p = NULL;
    *whole_p = 0;
    if (n == 0)
        return 0;
    Py_ssize_t need_fb = s->frame_bytes > fp->out_cap ? s->frame_bytes : fp->out_cap;
    if (n > fp->scratch_cap) {
        int16_t *x = PyMem_Realloc(fp->x16, (size_t)n * sizeof(int16_t));
        if (x == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        fp->x16 = x;
    }
    if (n > fp->scratch_cap || need_fb > fp->out_cap) {
        /* the carry (less than a frame), then every filtered sample after it: the filter
           writes there itself, so whole frames go out with no copy of their own */
        Py_ssize_t cap_n = n > fp->scratch_cap ? n : fp->scratch_cap;
        uint8_t *o = PyMem_Realloc(fp->out, (size_t)(cap_n + HIST_MAX) * 2 * sizeof(int16_t) + (size_t)need_fb);
        if (o == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        fp->out = o;
        fp->out_cap = need_fb;
        fp->scratch_cap = cap_n;
    }
    const int16_t *table = s->table;
    for (Py_ssize_t i = 0; i < n; i++)
        fp->x16[i] = table[s->codes[i]];
    int16_t hist[HIST_MAX];
    Py_ssize_t n_out, nhist;
    uint8_t *out = fp->out;
    memcpy(out, s->carry, (size_t)s->ncarry);     /* an even number of bytes: int16 samples */
    if (rtp2ws_upsample2x(fp->phases, fp->K, fp->frac_bits, s->hist, s->nhist, fp->x16, n,
                          (int16_t *)(out + s->ncarry), &n_out, hist, &nhist) < 0)
        return -1;
    memcpy(s->hist, hist, (size_t)nhist * sizeof(int16_t));
    s->nhist = nhist;
    Py_ssize_t ybytes = n_out * 2 * (Py_ssize_t)sizeof(int16_t);
    Py_ssize_t total = s->ncarry + ybytes;
    Py_ssize_t whole = total - total % s->frame_bytes;
    Py_ssize_t rest = total - whole;
    memcpy(s->carry, out + whole, (size_t)rest);
    s->ncarry = rest;
    if (whole > 0) {
        *out_p = out;
        *whole_p = whole;
    }
    s->streamed += n;
    s->nlast = s->last_n;
    memcpy(s->last_codes, s->codes + n - s->last_n, (size_t)s->last_n);
    s->nsamples = 0;
    return 0;
}

/* take(sid, disarm) -> (packets, nbytes, next_ext, last_ts_ext, last_arrival, max_arrival,
 *                       last_payload, samples, streamed, state, jitter, delta)
 * A bound slot keeps the audio it has not streamed yet unless disarmed: then that comes
 * as samples, with state = (the filter's state, the part-frame) as of its last pump. */
static PyObject *
FastPath_take(FastPath *self, PyObject *args)
{
    int sid, disarm;
    if (!PyArg_ParseTuple(args, "ip", &sid, &disarm))
        return NULL;
    Slot *s = get_slot(self, sid);
    if (s == NULL)
        return NULL;
    int keep = s->bound && !disarm;       /* the audio not streamed yet stays for pump() */
    Py_ssize_t n = keep ? 0 : s->nsamples;
    PyObject *samples = PyBytes_FromStringAndSize(NULL, n * 2);
    if (samples != NULL) {
        int16_t *pcm = (int16_t *)PyBytes_AS_STRING(samples);
        const int16_t *table = s->table;
        for (Py_ssize_t i = 0; i < n; i++)
            pcm[i] = table[s->codes[i]];
    }
    PyObject *last = !s->packets ? (Py_INCREF(Py_None), Py_None)
        : s->nsamples ? PyBytes_FromStringAndSize((const char *)s->codes + s->nsamples - s->last_n, s->last_n)
                      : PyBytes_FromStringAndSize((const char *)s->last_codes, s->nlast);
    PyObject *state = s->bound && disarm
        ? Py_BuildValue("(y#y#)", (const char *)s->hist, s->nhist * (Py_ssize_t)sizeof(int16_t),
                        (const char *)s->carry, s->ncarry)
        : (Py_INCREF(Py_None), Py_None);
    if (samples == NULL || last == NULL || state == NULL) {
        Py_XDECREF(samples);
        Py_XDECREF(last);
        Py_XDECREF(state);
        return NULL;
    }
    PyObject *out = Py_BuildValue("LLLLddNNLN(ddLd)(dLd)", (long long)s->packets, (long long)s->nbytes,
                                  (long long)s->next_ext, (long long)s->last_ts_ext, s->last_arrival,
                                  s->max_arrival, last, samples, (long long)s->streamed, state, s->jitter,
                                  s->jitter_total, (long long)s->jitter_counted, s->jitter_peak,
                                  s->delta_ref, (long long)s->delta_ts, s->delta_peak);
    if (out == NULL)
        return NULL;
    if (!keep) {
        s->base += s->nsamples;
        s->nsamples = 0;
    }
    s->packets = 0;
    s->nbytes = 0;
    s->streamed = 0;
    if (disarm && self->nready > 0) {     /* a slot id is reused: it must not stay on the ready list */
        Py_ssize_t j = 0;
        for (Py_ssize_t i = 0; i < self->nready; i++)
            if (self->ready[i] != sid)
                self->ready[j++] = self->ready[i];
        self->nready = j;
    }
    if (!keep)
        s->ready = 0;
    if (disarm) {
        s->armed = 0;
        s->bound = 0;
        PyMem_Free(s->carry);
        s->carry = NULL;
        Py_CLEAR(s->lane);
        self->table[s->entry].state = 2;
        if (s->cap > 16384) {     /* give back what one long delivery interval took */
            PyMem_Free(s->codes);
            s->codes = NULL;
            s->cap = 0;
        }
        self->free_sids[self->nfree++] = sid;
    }
    return out;
}

/* The lane API of rtp2ws._wsframe (native/lane.h), imported at the first bind with a lane. */
static const lane_api_t *lane_api;

static int
need_lane_api(void)
{
    if (lane_api != NULL)
        return 0;
    const lane_api_t *api = PyCapsule_Import("rtp2ws._wsframe._lane_api", 0);
    if (api == NULL)
        return -1;
    if (api->version != LANE_API_VERSION) {
        PyErr_Format(PyExc_ImportError, "rtp2ws._wsframe's lane API is version %d, not %d: rebuild the extensions",
                     api->version, LANE_API_VERSION);
        return -1;
    }
    lane_api = api;
    return 0;
}

/* bind(sid, history, carry, frame_bytes, lane=None): the slot streams its leg from now on */
static PyObject *
FastPath_bind(FastPath *self, PyObject *args)
{
    int sid;
    Py_buffer history, carry;
    Py_ssize_t frame_bytes;
    PyObject *lane = Py_None;
    if (!PyArg_ParseTuple(args, "iy*y*n|O", &sid, &history, &carry, &frame_bytes, &lane))
        return NULL;
    PyObject *result = NULL;
    Slot *s = get_slot(self, sid);
    if (s == NULL)
        goto done;
    if (self->phases == NULL) {
        PyErr_SetString(PyExc_ValueError, "no filter: the FastPath was made without phases");
        goto done;
    }
    if (s->bound) {
        PyErr_SetString(PyExc_ValueError, "the slot is bound already");
        goto done;
    }
    if (s->nsamples) {
        PyErr_SetString(PyExc_ValueError, "a slot is bound right after a take");
        goto done;
    }
    if (frame_bytes <= 0 || frame_bytes % 2 || carry.len % 2 || carry.len >= frame_bytes) {
        PyErr_SetString(PyExc_ValueError, "frame_bytes must be even and positive, the carry a part-frame of int16");
        goto done;
    }
    if (history.len % 2 || history.len / 2 > self->K - 1) {
        PyErr_SetString(PyExc_ValueError, "history: at most the filter's state of int16");
        goto done;
    }
    if (lane != Py_None) {
        if (need_lane_api() < 0)
            PyErr_Clear();      /* no C lanes here: a Python one */
        if (lane_api == NULL || !lane_api->check(lane)) {
            int has = PyObject_HasAttrString(lane, "push");
            if (has <= 0) {
                if (has == 0)
                    PyErr_Format(PyExc_TypeError, "lane must be a Lane (with push()), not %.100s",
                                 Py_TYPE(lane)->tp_name);
                goto done;
            }
        }
    }
    uint8_t *buf = PyMem_Malloc((size_t)frame_bytes);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    PyMem_Free(s->carry);
    s->carry = buf;
    memcpy(s->carry, carry.buf, (size_t)carry.len);
    s->ncarry = carry.len;
    s->frame_bytes = frame_bytes;
    memcpy(s->hist, history.buf, (size_t)history.len);
    s->nhist = history.len / 2;
    s->streamed = 0;
    s->bound = 1;
    Py_XSETREF(s->lane, lane == Py_None ? NULL : Py_NewRef(lane));
    if (s->ready) {
        Py_ssize_t j = 0;
        for (Py_ssize_t i = 0; i < self->nready; i++)
            if (self->ready[i] != sid)
                self->ready[j++] = self->ready[i];
        self->nready = j;
        s->ready = 0;
    }
    result = (Py_INCREF(Py_None), Py_None);
done:
    PyBuffer_Release(&history);
    PyBuffer_Release(&carry);
    return result;
}

/* pump() -> [(sid, frames, newest, held)]: the new audio of every bound slot that is ready (it
 * took deliver_samples since it was last streamed), streamed; they leave the ready
 * list, the others stay on it for ready().  A slot bound with a lane has its frames
 * pushed there instead (lane.push(frames, newest, held, packet): packet is the 16 kHz
 * samples of its newest packet), and is not in the list. */
static PyObject *
FastPath_pump(FastPath *self, PyObject *unused)
{
    (void)unused;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < self->nready; i++) {
        int sid = self->ready[i];
        Slot *s = &self->slots[sid];
        if (!s->bound) {
            self->ready[j++] = sid;
            continue;
        }
        s->ready = 0;
        const uint8_t *frames;
        Py_ssize_t nframes;
        int failed = pump_slot(self, s, &frames, &nframes) < 0;
        if (!failed && nframes == 0)
            continue;                   /* less than a frame so far: nothing to hand on */
        if (failed)
            ;
        else if (s->lane != NULL && lane_api != NULL && lane_api->check(s->lane))
            /* straight into the stream's outbox, no Python object */
            failed = lane_api->push(s->lane, frames, nframes, s->last_arrival, s->ncarry / 2, 2 * s->last_n) < 0;
        else if (s->lane != NULL) {
            PyObject *r = PyObject_CallMethod(s->lane, "push", "y#dnn", (const char *)frames, nframes,
                                              s->last_arrival, s->ncarry / 2, 2 * s->last_n);
            failed = r == NULL;
            Py_XDECREF(r);
        }
        else {
            PyObject *item = Py_BuildValue("(iy#dn)", sid, (const char *)frames, nframes, s->last_arrival,
                                           s->ncarry / 2);
            failed = item == NULL || PyList_Append(out, item) < 0;
            Py_XDECREF(item);
        }
        if (failed) {
            for (Py_ssize_t k = i + 1; k < self->nready; k++)    /* keep the list whole */
                self->ready[j++] = self->ready[k];
            self->nready = j;
            Py_DECREF(out);
            return NULL;
        }
    }
    self->nready = j;
    return out;
}

static PyObject *
FastPath_rebase(FastPath *self, PyObject *args)
{
    int sid;
    long long base;
    if (!PyArg_ParseTuple(args, "iL", &sid, &base))
        return NULL;
    Slot *s = get_slot(self, sid);
    if (s == NULL)
        return NULL;
    s->base = base;
    Py_RETURN_NONE;
}

static PyObject *
list_of_sids(FastPath *self, int touched)
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->nslots; i++) {
        Slot *s = &self->slots[i];
        if (!s->armed || (touched && s->packets == 0))
            continue;
        PyObject *v = PyLong_FromSsize_t(i);
        if (v == NULL || PyList_Append(out, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(v);
    }
    return out;
}

/* ready() -> slot ids that reached the delivery size since they were last taken */
static PyObject *
FastPath_ready(FastPath *self, PyObject *unused)
{
    (void)unused;
    PyObject *out = PyList_New(self->nready);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->nready; i++)
        PyList_SET_ITEM(out, i, PyLong_FromLong(self->ready[i]));
    self->nready = 0;
    return out;
}

static PyObject *
FastPath_touched(FastPath *self, PyObject *unused)
{
    (void)unused;
    return list_of_sids(self, 1);
}

static PyObject *
FastPath_armed(FastPath *self, PyObject *unused)
{
    (void)unused;
    return list_of_sids(self, 0);
}

static inline unsigned
be16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static inline uint32_t
be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint32_t
le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static inline int
af_version(uint32_t family)
{
    if (family == 2)
        return 4;
    if (family == 10 || family == 24 || family == 28 || family == 30)
        return 6;
    return 0;
}

static inline int
ethertype_version(unsigned t)
{
    return t == 0x0800 ? 4 : t == 0x86DD ? 6 : 0;
}

/* Offset of the IP header and its version (0: not IP, or not for here), as
 * rtp2ws.net.packet.link_reader reads the link layer (which raises where this says 0). */
static int
link_header(const Link *link, const uint8_t *d, Py_ssize_t len, Py_ssize_t *off)
{
    Py_ssize_t o = link->header;
    switch (link->kind) {
    case LINK_ETHERTYPE: {        /* the EtherType ends the header; then VLAN tags, if they may follow */
        if (len < o)
            return 0;
        unsigned t = be16(d + link->type_at);
        if (link->vlans)
            while (t == 0x8100 || t == 0x88A8 || t == 0x9100) {   /* packet.VLAN_TPIDS */
                if (len < o + 4)
                    return 0;
                t = be16(d + o + 2);
                o += 4;
            }
        *off = o;
        return ethertype_version(t);
    }
    case LINK_IP:                 /* bare IP, version in the first four bits */
        if (len <= o)
            return 0;
        *off = o;
        return d[o] >> 4 == 4 ? 4 : d[o] >> 4 == 6 ? 6 : 0;
    case LINK_IPV4:
        *off = o;
        return 4;
    case LINK_IPV6:
        *off = o;
        return 6;
    case LINK_AF:                 /* BSD loopback, family in the capturing host's byte order */
    case LINK_AF_NET: {           /* ... in network byte order */
        if (len < o)
            return 0;
        *off = o;
        int be = af_version(be32(d + link->type_at));
        int le = link->kind == LINK_AF ? af_version(le32(d + link->type_at)) : be;
        if (le == 4 || be == 4)
            return 4;
        return le == 6 || be == 6 ? 6 : 0;
    }
    default:
        return 0;
    }
}

static int
push_ready(FastPath *fp, int32_t sid)
{
    if (fp->nready == fp->ready_cap) {
        Py_ssize_t cap = fp->ready_cap ? fp->ready_cap * 2 : 64;
        int32_t *r = PyMem_Realloc(fp->ready, (size_t)cap * sizeof(int32_t));
        if (r == NULL)
            return -1;
        fp->ready = r;
        fp->ready_cap = cap;
    }
    fp->ready[fp->nready++] = sid;
    return 0;
}

/* Take the packet if it continues an armed flow; 0 means "give it to Python". */
static int
take_packet(FastPath *fp, double ts, const uint8_t *d, Py_ssize_t len)
{
    Py_ssize_t off;
    int version = link_header(&fp->link, d, len, &off);
    const uint8_t *src, *dst;
    Py_ssize_t l4, end;
    int iplen;
    if (version == 4) {
        Py_ssize_t avail = len - off;
        if (avail < 20)
            return 0;
        const uint8_t *ip = d + off;
        if (ip[0] >> 4 != 4)
            return 0;
        Py_ssize_t hlen = (ip[0] & 0x0F) * 4;
        unsigned total = be16(ip + 2);
        if (hlen < 20 || hlen > avail || total == 0 || total < hlen || total > avail)
            return 0;
        if (be16(ip + 6) & 0x3FFF || ip[9] != 17)   /* a fragment, or not UDP */
            return 0;
        src = ip + 12;
        dst = ip + 16;
        iplen = 4;
        l4 = off + hlen;
        end = off + total;
    } else if (version == 6) {
        Py_ssize_t avail = len - off;
        if (avail < 40)
            return 0;
        const uint8_t *ip = d + off;
        if (ip[0] >> 4 != 6 || ip[6] != 17)          /* extension headers: Python */
            return 0;
        unsigned plen = be16(ip + 4);
        if (plen == 0 || plen > avail - 40)
            return 0;
        src = ip + 8;
        dst = ip + 24;
        iplen = 16;
        l4 = off + 40;
        end = l4 + plen;
    } else {
        return 0;
    }
    if (end - l4 < 8)
        return 0;
    const uint8_t *udp = d + l4;
    unsigned sport = be16(udp), dport = be16(udp + 2), ulen = be16(udp + 4);
    if (ulen < 8 || ulen > end - l4 || dport == VXLAN_PORT)
        return 0;
    const uint8_t *p = udp + 8;
    Py_ssize_t plen = ulen - 8;
    /* RTP, version 2, no padding, extension or CSRCs, not an RTCP type */
    if (plen < 13 || p[0] != 0x80 || (p[1] >= 192 && p[1] <= 223))
        return 0;
    uint8_t key[KEY_LEN];
    make_key(key, src, dst, iplen, sport, dport);
    Py_ssize_t e = table_find(fp, key);
    if (e < 0)
        return 0;
    int32_t sid = fp->table[e].sid;
    if (sid < 0) {                /* ignored: another worker's call */
        Foreign *f = &fp->foreign[-1 - sid];
        f->packets++;
        if (ts > f->newest)
            f->newest = ts;
        fp->dropped++;
        if (ts > fp->now)
            fp->now = ts;
        return 1;
    }
    Slot *s = &fp->slots[sid];
    Py_ssize_t n = plen - 12;
    uint32_t ts32 = be32(p + 4);
    if (be32(p + 8) != s->ssrc || be16(p + 2) != s->next_seq || (p[1] & 0x7F) != s->pt
        || ts32 != s->expect_ts || n > MAX_PAYLOAD)
        return 0;
    int32_t dts = (int32_t)(ts32 - s->last_ts32);
    double gap = (ts - s->last_arrival) * 8000.0;
    double skew = fabs((double)dts - gap);      /* RFC 3550's D, in timestamp units */
    if (skew > RESYNC_SAMPLES)
        return 0;                 /* the leg re-anchors its timeline: Python's decision */
    if (s->nsamples + n > s->cap) {
        Py_ssize_t cap = s->cap ? s->cap * 2 : CODES_MIN;
        while (cap < s->nsamples + n)
            cap *= 2;
        uint8_t *b = PyMem_Realloc(s->codes, (size_t)cap);
        if (b == NULL)
            return 0;             /* Python will cope, more slowly */
        s->codes = b;
        s->cap = cap;
    }
    memcpy(s->codes + s->nsamples, p + 12, (size_t)n);
    s->nsamples += n;
    s->last_n = n;
    s->packets++;
    s->nbytes += n;
    s->next_ext++;
    s->next_seq = (uint16_t)s->next_ext;
    s->last_ts_ext += dts;
    s->last_ts32 = ts32;
    s->expect_ts = ts32 + (uint32_t)n;
    s->last_arrival = ts;
    if (ts > s->max_arrival)
        s->max_arrival = ts;
    /* interarrival jitter, as MediaLeg._place: J += (D - J) / 16; a packet without the
       marker bit is counted (sum, count, maximum).  No branch: the marker bit weighs it
       (1.0 * J and 0.0 + sum are exact, and J >= 0, so the maximum is the twin's) */
    double j = s->jitter + (skew - s->jitter) / 16.0;
    int counted = !(p[1] & 0x80);
    double w = (double)counted * j;
    s->jitter = j;
    s->jitter_total += w;
    s->jitter_counted += counted;
    s->jitter_peak = w > s->jitter_peak ? w : s->jitter_peak;
    /* max delta, as LegQuality.on_rtp: a timestamp not behind the reference's moves it,
       and its delta counts unless the marker bit is set */
    if ((int32_t)(ts32 - s->delta_ts) >= 0) {
        double delta = ts - s->delta_ref;
        if (!(p[1] & 0x80) && delta > s->delta_peak)
            s->delta_peak = delta;
        s->delta_ref = ts;
        s->delta_ts = ts32;
    }
    /* the packet is taken now: if the ready list cannot grow, the slot is delivered
       when Python next takes it for another reason, never twice */
    if (!s->ready && s->base + s->nsamples >= fp->deliver && push_ready(fp, sid) == 0)
        s->ready = 1;
    fp->packets++;
    if (ts > fp->now)
        fp->now = ts;
    return 1;
}

/* run(reader, deadline, budget, until=inf) -> (ts, frame) for Python, RUN_TICK, RUN_EOF,
 * RUN_PAUSE: the next packet is at or after until, and stays in the reader (held_ts), or
 * RUN_IDLE: a live reader (LiveReader) has no packet now */
static PyObject *
FastPath_run(FastPath *self, PyObject *args)
{
    Reader *r;
    double deadline;
    long long budget;
    double until = HUGE_VAL;
    if (!PyArg_ParseTuple(args, "O!dL|d", &capture_ReaderType, &r, &deadline, &budget, &until))
        return NULL;
    for (;;) {
        if (self->since_tick >= budget) {
            self->since_tick = 0;
            return PyLong_FromLong(RUN_TICK);
        }
        if (capture_reader_raise(r) < 0)
            return NULL;
        if (r->pcap == NULL && !r->held)
            return PyLong_FromLong(RUN_EOF);
        double ts;
        const uint8_t *data;
        Py_ssize_t len;
        int rc = capture_reader_next(r, &ts, &data, &len);
        if (rc < 0)
            return NULL;
        if (rc == 0 || rc == 2) {
            if (self->since_tick > 0) {   /* what was read before the end gets its tick first */
                self->since_tick = 0;
                return PyLong_FromLong(RUN_TICK);
            }
            if (rc == 2)
                return PyLong_FromLong(RUN_IDLE);
            continue;
        }
        if (ts >= until) {                /* not due yet: read again by the next run */
            capture_reader_hold(r, ts, data, len);
            return PyLong_FromLong(RUN_PAUSE);
        }
        self->since_tick++;
        if (ts < deadline && take_packet(self, ts, data, len))
            continue;
        PyObject *frame = PyBytes_FromStringAndSize((const char *)data, len);
        if (frame == NULL)
            return NULL;
        return Py_BuildValue("(dN)", ts, frame);
    }
}

/* feed(batch, pos, deadline) -> index of the first packet of batch[pos:] not taken (len: all) */
static PyObject *
FastPath_feed(FastPath *self, PyObject *args)
{
    PyObject *batch;
    Py_ssize_t pos;
    double deadline;
    if (!PyArg_ParseTuple(args, "O!nd", &PyList_Type, &batch, &pos, &deadline))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(batch);
    for (; pos < n; pos++) {
        PyObject *item = PyList_GET_ITEM(batch, pos);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2)
            break;
        PyObject *frame = PyTuple_GET_ITEM(item, 1);
        double ts = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 0));
        if (ts == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            break;
        }
        if (!PyBytes_Check(frame) || !(ts < deadline)
            || !take_packet(self, ts, (const uint8_t *)PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame)))
            break;
    }
    return PyLong_FromSsize_t(pos < n ? pos : n);
}

static PyMethodDef FastPath_methods[] = {
    {"arm", (PyCFunction)FastPath_arm, METH_VARARGS,
     "arm(src, sport, dst, dport, ssrc, next_ext, pt, alaw, expect_ts, last_ts_ext, last_arrival, base,"
     " jitter=(0.0, 0.0, 0, 0.0), delta=(last_arrival, last_ts_ext, -inf)) -> slot id"},
    {"ignore", (PyCFunction)FastPath_ignore, METH_VARARGS,
     "ignore(src, sport, dst, dport) -> id: the flow's RTP packets are dropped (counted) from now on"},
    {"ignored", (PyCFunction)FastPath_ignored, METH_VARARGS,
     "ignored(fid, release) -> (packets, newest) dropped on the flow since the last look"},
    {"take", (PyCFunction)FastPath_take, METH_VARARGS,
     "take(sid, disarm) -> (packets, nbytes, next_ext, last_ts_ext, last_arrival, max_arrival,"
     " last_payload, samples, streamed, state, jitter, delta)"},
    {"rebase", (PyCFunction)FastPath_rebase, METH_VARARGS, "rebase(sid, base): the leg now holds base samples"},
    {"bind", (PyCFunction)FastPath_bind, METH_VARARGS,
     "bind(sid, history, carry, frame_bytes, lane=None): the fast path streams the slot's leg from now on\n"
     "(into the lane's outbox, lane.push(frames, newest, held, packet), when given one)"},
    {"pump", (PyCFunction)FastPath_pump, METH_NOARGS,
     "pump() -> [(sid, frames, newest, held)]: the bound slots' new frames, the capture time of their"
     " newest packet, the samples held after them"},
    {"ready", (PyCFunction)FastPath_ready, METH_NOARGS, "slot ids that reached the delivery size"},
    {"touched", (PyCFunction)FastPath_touched, METH_NOARGS, "armed slot ids with packets not yet taken"},
    {"armed", (PyCFunction)FastPath_armed, METH_NOARGS, "armed slot ids"},
    {"feed", (PyCFunction)FastPath_feed, METH_VARARGS,
     "feed(batch, pos, deadline) -> index of the first (ts, frame) of batch[pos:] not taken"},
    {"run", (PyCFunction)FastPath_run, METH_VARARGS,
     "run(reader, deadline, budget, until=inf) -> (ts, frame) | TICK | EOF | PAUSE (the next packet is at or\n"
     "after until: it stays in the reader, held_ts) | IDLE (a LiveReader has no packet now)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef FastPath_members[] = {
    {"packets", T_LONGLONG, offsetof(FastPath, packets), READONLY, "packets taken here"},
    {"now", T_DOUBLE, offsetof(FastPath, now), READONLY, "latest capture time of a packet taken here"},
    {"foreign", T_LONGLONG, offsetof(FastPath, dropped), READONLY, "packets dropped on ignored flows, in all"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rtp2ws._fastpath.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FastPath(link, deliver_samples, alaw_table, ulaw_table, phases=None, frac_bits=0);"
              " see rtp2ws/fastpath/twin.py.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastPath_init,
    .tp_dealloc = (destructor)FastPath_dealloc,
    .tp_methods = FastPath_methods,
    .tp_members = FastPath_members,
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "rtp2ws._fastpath",
    "The C twins of rtp2ws.capture.file.Reader and rtp2ws.fastpath.twin.FastPath: capture files read"
    " and in-order RTP decoded in batches.",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (PyType_Ready(&FastPathType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL)
        return NULL;
    if (rtp2ws_resample_init() < 0 || capture_file_add(m) < 0
        || PyModule_AddObjectRef(m, "FastPath", (PyObject *)&FastPathType) < 0
        || PyModule_AddIntConstant(m, "EOF", RUN_EOF) < 0
        || PyModule_AddIntConstant(m, "TICK", RUN_TICK) < 0
        || PyModule_AddIntConstant(m, "PAUSE", RUN_PAUSE) < 0
        || PyModule_AddIntConstant(m, "IDLE", RUN_IDLE) < 0 || capture_live_add(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
