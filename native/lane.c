/*
 * rtp2ws._wsframe.Lane: see lane.h, and rtp2ws/ws/lane.py (the reference twin).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "lane.h"
#include "outbox.h"

static PyTypeObject LaneType;

int
lane_check(PyObject *o)
{
    return Py_IS_TYPE(o, &LaneType);
}

static PyObject *
lane_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"outbox", "marked", "owner", NULL};
    PyObject *outbox, *marked, *owner;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O:Lane", kwlist, &outbox, &PyList_Type, &marked, &owner))
        return NULL;
    if (!ob_check(outbox)) {
        PyErr_Format(PyExc_TypeError, "outbox must be an rtp2ws._wsframe.Outbox, not %.100s",
                     Py_TYPE(outbox)->tp_name);
        return NULL;
    }
    lane_obj *l = (lane_obj *)type->tp_alloc(type, 0);
    if (l == NULL)
        return NULL;
    l->outbox = Py_NewRef(outbox);
    l->marked = Py_NewRef(marked);
    l->owner = Py_NewRef(owner);
    l->stamps = Py_NewRef(Py_None);
    return (PyObject *)l;
}

static int
lane_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self, (void)args, (void)kwargs;
    return 0;                 /* everything was done by lane_new */
}

static int
lane_traverse(lane_obj *l, visitproc visit, void *arg)
{
    Py_VISIT(l->outbox);
    Py_VISIT(l->marked);
    Py_VISIT(l->owner);
    Py_VISIT(l->wire);
    Py_VISIT(l->protocol);
    Py_VISIT(l->transport);
    Py_VISIT(l->open_state);
    Py_VISIT(l->stamps);
    return 0;
}

static void
drop_connection(lane_obj *l)
{
    Py_CLEAR(l->wire);
    Py_CLEAR(l->protocol);
    Py_CLEAR(l->transport);
    Py_CLEAR(l->open_state);
    l->live = 0;
}

static int
lane_clear(lane_obj *l)
{
    drop_connection(l);
    Py_CLEAR(l->outbox);
    Py_CLEAR(l->marked);
    Py_CLEAR(l->owner);
    Py_CLEAR(l->stamps);
    return 0;
}

static void
lane_dealloc(lane_obj *l)
{
    PyObject_GC_UnTrack(l);
    lane_clear(l);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static PyObject *
lane_repr(lane_obj *l)
{
    return PyUnicode_FromFormat("Lane(live=%s, wire=%s, dirty=%s, pushed=%lld)", l->live ? "True" : "False",
                                l->wire != NULL ? "True" : "False", l->dirty ? "True" : "False", l->pushed);
}

/* The capture side: frames in, the lane marked for the next flush while live. */
static int
push(PyObject *self, const uint8_t *pcm, Py_ssize_t n, double newest, Py_ssize_t held, Py_ssize_t packet)
{
    lane_obj *l = (lane_obj *)self;
    if (l->outbox == NULL) {
        PyErr_SetString(PyExc_ValueError, "the lane is cleared");
        return -1;
    }
    ob_outbox *ob = (ob_outbox *)l->outbox;
    long long first = ob_offset(ob);
    int queued = ob_push(ob, pcm, (size_t)n);
    if (queued < 0)
        return -1;
    long long end = ob_offset(ob);
    l->pushed += end - first;
    if (queued && l->live && !l->dirty) {
        if (PyList_Append(l->marked, self) < 0)
            return -1;
        l->dirty = 1;
    }
    if (l->stamps != Py_None) {
        PyObject *t = Py_BuildValue("(LLdnn)", first, end, newest, held, packet);
        if (t == NULL)
            return -1;
        int r = PyList_Append(l->stamps, t);
        Py_DECREF(t);
        if (r < 0)
            return -1;
    }
    return 0;
}

static PyObject *
lane_push(lane_obj *l, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"pcm", "newest", "held", "packet", NULL};
    Py_buffer pcm;
    double newest = 0.0;
    Py_ssize_t held = 0, packet = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|dnn:push", kwlist, &pcm, &newest, &held, &packet))
        return NULL;
    int r = push((PyObject *)l, pcm.buf, pcm.len, newest, held, packet);
    PyBuffer_Release(&pcm);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
lane_go_live(lane_obj *l, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"wire", "protocol", "transport", "open_state", NULL};
    PyObject *wire, *protocol, *transport, *open_state;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:go_live", kwlist, &wire, &protocol, &transport,
                                     &open_state))
        return NULL;
    drop_connection(l);
    l->wire = wire == Py_None ? NULL : Py_NewRef(wire);
    l->protocol = Py_NewRef(protocol);
    l->transport = Py_NewRef(transport);
    l->open_state = Py_NewRef(open_state);
    l->live = 1;
    Py_RETURN_NONE;
}

static PyObject *
lane_go_dead(lane_obj *l, PyObject *Py_UNUSED(ignored))
{
    drop_connection(l);
    Py_RETURN_NONE;
}

static PyObject *
lane_release(lane_obj *l, PyObject *Py_UNUSED(ignored))
{
    drop_connection(l);
    Py_XSETREF(l->owner, Py_NewRef(Py_None));
    Py_RETURN_NONE;
}

static PyObject *
get_obj(PyObject *o)
{
    return Py_NewRef(o != NULL ? o : Py_None);
}

static PyObject *get_outbox(lane_obj *l, void *c) { (void)c; return get_obj(l->outbox); }
static PyObject *get_marked(lane_obj *l, void *c) { (void)c; return get_obj(l->marked); }
static PyObject *get_owner(lane_obj *l, void *c) { (void)c; return get_obj(l->owner); }
static PyObject *get_wire(lane_obj *l, void *c) { (void)c; return get_obj(l->wire); }
static PyObject *get_live(lane_obj *l, void *c) { (void)c; return PyBool_FromLong(l->live); }
static PyObject *get_dirty(lane_obj *l, void *c) { (void)c; return PyBool_FromLong(l->dirty); }
static PyObject *get_pushed(lane_obj *l, void *c) { (void)c; return PyLong_FromLongLong(l->pushed); }
static PyObject *get_stamps(lane_obj *l, void *c) { (void)c; return get_obj(l->stamps); }

static int
set_dirty(lane_obj *l, PyObject *v, void *c)
{
    (void)c;
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete dirty");
        return -1;
    }
    int b = PyObject_IsTrue(v);
    if (b < 0)
        return -1;
    l->dirty = b;
    return 0;
}

static int
set_stamps(lane_obj *l, PyObject *v, void *c)
{
    (void)c;
    if (v == NULL || (v != Py_None && !PyList_Check(v))) {
        PyErr_SetString(PyExc_TypeError, "stamps is None or a list");
        return -1;
    }
    Py_XSETREF(l->stamps, Py_NewRef(v));
    return 0;
}

static PyGetSetDef lane_getset[] = {
    {"outbox", (getter)get_outbox, NULL, "The stream's outbox.", NULL},
    {"marked", (getter)get_marked, NULL, "The sender's list of lanes with news.", NULL},
    {"owner", (getter)get_owner, NULL, "The sender's Stream (None once released).", NULL},
    {"wire", (getter)get_wire, NULL, "The live connection's Wire (None: not live, or no wire).", NULL},
    {"live", (getter)get_live, NULL, "A connection is open (go_live .. go_dead).", NULL},
    {"dirty", (getter)get_dirty, (setter)set_dirty, "In marked since the last flush.", NULL},
    {"pushed", (getter)get_pushed, NULL, "Samples (per channel) pushed.", NULL},
    {"stamps", (getter)get_stamps, (setter)set_stamps,
     "None, or a list that gets (first, end, newest, held, packet) per push (a probe).", NULL},
    {NULL},
};

static PyMethodDef lane_methods[] = {
    {"push", (PyCFunction)(void (*)(void))lane_push, METH_VARARGS | METH_KEYWORDS,
     "push(pcm, newest=0.0, held=0, packet=0): queue whole frames; the lane is marked while live."},
    {"go_live", (PyCFunction)(void (*)(void))lane_go_live, METH_VARARGS | METH_KEYWORDS,
     "go_live(wire, protocol, transport, open_state): a connection is open (wire None: not plain TCP)."},
    {"go_dead", (PyCFunction)lane_go_dead, METH_NOARGS, "go_dead(): the connection is over."},
    {"release", (PyCFunction)lane_release, METH_NOARGS, "release(): the stream is done (no owner, no connection)."},
    {NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rtp2ws._wsframe.Lane",
    .tp_basicsize = sizeof(lane_obj),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Lane(outbox, marked, owner): one stream's data plane (rtp2ws.ws.lane.LanePy's C twin).",
    .tp_new = lane_new,
    .tp_init = lane_init,
    .tp_dealloc = (destructor)lane_dealloc,
    .tp_traverse = (traverseproc)lane_traverse,
    .tp_clear = (inquiry)lane_clear,
    .tp_repr = (reprfunc)lane_repr,
    .tp_methods = lane_methods,
    .tp_getset = lane_getset,
};

static lane_api_t lane_api = {LANE_API_VERSION, lane_check, push};

/* take_marked(marked) -> list: the lanes marked since the last flush, and the list
   emptied but keeping its room: list.clear() frees it, and the fast path's appends
   then grew it again at every flush (a realloc every few lanes, 2-3 % of a paced
   replay's CPU in perf). */
static PyObject *
take_marked(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyList_CheckExact(arg)) {
        PyErr_Format(PyExc_TypeError, "take_marked() needs a list, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    PyListObject *lst = (PyListObject *)arg;
    Py_ssize_t n = PyList_GET_SIZE(arg);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyList_SET_ITEM(out, i, lst->ob_item[i]);   /* the reference moves */
        lst->ob_item[i] = NULL;
    }
    Py_SET_SIZE(lst, 0);
    return out;
}

static PyMethodDef lane_functions[] = {
    {"take_marked", (PyCFunction)take_marked, METH_O,
     "take_marked(marked) -> list: the items, and marked emptied keeping its room (rtp2ws.ws.lane.take_marked_py)."},
    {NULL, NULL, 0, NULL},
};

int
lane_module_init(PyObject *m)
{
    if (PyModule_AddFunctions(m, lane_functions) < 0)
        return -1;
    if (PyType_Ready(&LaneType) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "Lane", (PyObject *)&LaneType) < 0)
        return -1;
    PyObject *cap = PyCapsule_New(&lane_api, "rtp2ws._wsframe._lane_api", NULL);
    if (cap == NULL)
        return -1;
    if (PyModule_AddObject(m, "_lane_api", cap) < 0) {
        Py_DECREF(cap);
        return -1;
    }
    return 0;
}
