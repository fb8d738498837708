import ast
import os

import pytest

from rtp2ws.capture.file import BACKENDS, CaptureError, CaptureFile, Reader, ReadError, reader_class
from rtp2ws.net.packet import (
    DLT_EN10MB,
    DLT_IPV4,
    DLT_IPV6,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_RAW,
    DLT_RAW_OPENBSD,
    LINKTYPE_RAW,
    Packet,
    PacketDecoder,
    link_layer,
)

from netgen import FAMILIES, LINK_FAMILY, fragment, link, packed, tcp, udp, write_pcap, write_pcapng
from paths import ROOT

# What pcap_datalink() reports for a file written with each link type:
# libpcap maps LINKTYPE_RAW (101) to DLT_RAW (12).
READ_BACK = {DLT_RAW_OPENBSD: DLT_RAW, LINKTYPE_RAW: DLT_RAW}
WRITERS = {
    "pcap": lambda path, frames, lt: write_pcap(path, frames, lt),
    "pcap-ns": lambda path, frames, lt: write_pcap(path, frames, lt, nanosecond=True),
    "pcapng": lambda path, frames, lt: write_pcapng(path, frames, lt),
}


def sample_frames(linktype, fam):
    src, dst = FAMILIES[fam]
    vlans = (10, 20) if linktype == DLT_EN10MB else ()
    frames = [
        (1700000000.000001, link(linktype, udp(src, 40000, dst, 5004, b"\x80" * 172), vlans=vlans)),
        (1700000000.02, link(linktype, tcp(src, 5060, dst, 5060, b"OPTIONS sip:x SIP/2.0\r\n\r\n", seq=42))),
    ]
    for i, f in enumerate(fragment(udp(src, 5060, dst, 5060, b"S" * 3000), 1200)):
        frames.append((1700000000.5 + i / 1000, link(linktype, f, vlans=vlans)))
    return frames


def read_all(path, **kw):
    with CaptureFile(str(path), **kw) as cap:
        batches = list(cap.batches())
        return cap, batches


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("linktype,fam", LINK_FAMILY)
def test_round_trip_every_link_type(tmp_path, fmt, linktype, fam):
    path = tmp_path / f"cap.{fmt}"
    frames = sample_frames(linktype, fam)
    WRITERS[fmt](path, frames, linktype)
    cap, batches = read_all(path, batch=2)
    assert cap.linktype == READ_BACK.get(linktype, linktype)
    got = [p for b in batches for p in b]
    assert [len(b) for b in batches][:-1] == [2] * (len(batches) - 1)
    assert [f for _, f in got] == [f for _, f in frames]
    assert [ts for ts, _ in got] == pytest.approx([ts for ts, _ in frames], abs=1e-6)
    assert cap.packets_read == len(frames)
    assert cap.bytes_read == cap.size == os.path.getsize(path)

    src, dst = FAMILIES[fam]
    decoder = PacketDecoder(cap.linktype)
    packets = [p for p in (decoder.decode(f, ts) for ts, f in got) if p is not None]
    assert packets == [
        Packet(17, packed(src), 40000, packed(dst), 5004, b"\x80" * 172, 0, 0),
        Packet(6, packed(src), 5060, packed(dst), 5060, b"OPTIONS sip:x SIP/2.0\r\n\r\n", 42, 0x18),
        Packet(17, packed(src), 5060, packed(dst), 5060, b"S" * 3000, 0, 0),
    ]


def test_progress_counters(tmp_path):
    path = tmp_path / "p.pcap"
    frames = [(float(i), link(DLT_EN10MB, udp("10.0.0.1", 1, "10.0.0.2", 2, bytes(i)))) for i in range(10)]
    write_pcap(path, frames)
    with CaptureFile(str(path), batch=4) as cap:
        assert cap.path == str(path) and cap.packets_read == 0 and cap.bytes_read == 24
        seen = []
        for batch in cap.batches():
            seen.append((len(batch), cap.packets_read))
            assert cap.bytes_read <= cap.size
        assert seen == [(4, 4), (4, 8), (2, 10)]
        assert cap.bytes_read == cap.size


def test_empty_capture(tmp_path):
    path = tmp_path / "empty.pcapng"
    write_pcapng(path, [], DLT_LINUX_SLL2)
    cap, batches = read_all(path)
    assert batches == [] and cap.linktype == DLT_LINUX_SLL2 and cap.packets_read == 0


def _truncate(path, cut):
    data = path.read_bytes()
    path.write_bytes(data[:-cut])


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("batch", [1, 3, 100])
def test_truncated_file_yields_good_packets_then_fails(tmp_path, fmt, batch):
    path = tmp_path / f"capture.{fmt}"
    frames = [(100.0 + i, link(DLT_EN10MB, udp("10.0.0.1", 1, "10.0.0.2", 2, bytes([i]) * 50))) for i in range(7)]
    WRITERS[fmt](path, frames, DLT_EN10MB)
    _truncate(path, 20)
    got = []
    with CaptureFile(str(path), batch=batch) as cap:
        with pytest.raises(CaptureError) as exc:
            for b in cap.batches():
                got.extend(b)
    assert [f for _, f in got] == [f for _, f in frames[:6]]
    message = str(exc.value)
    assert message.startswith(f"{path}: packet 7: ")
    assert "truncated" in message and "only got" in message
    assert cap.packets_read == 6


def test_truncated_pcap_message_is_libpcaps(tmp_path):
    path = tmp_path / "capture.pcap"
    frame = link(DLT_EN10MB, udp("10.0.0.1", 1, "10.0.0.2", 2, bytes(100)))  # 142 bytes
    write_pcap(path, [(1.0, frame)] * 3)
    _truncate(path, 50)
    with CaptureFile(str(path)) as cap, pytest.raises(CaptureError) as exc:
        list(cap.batches())
    assert str(exc.value) == (
        f"{path}: packet 3: truncated dump file; tried to read 142 captured bytes, only got 92"
    )


def test_truncated_record_header(tmp_path):
    path = tmp_path / "hdr.pcap"
    write_pcap(path, [(1.0, b"x" * 60)] * 2)
    _truncate(path, 60 + 8)  # half of the second record header remains
    with CaptureFile(str(path)) as cap, pytest.raises(CaptureError, match=r"hdr\.pcap: packet 2: truncated dump file"):
        assert [len(b) for b in cap.batches()] == [1]


def test_not_a_capture_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not a capture file\n")
    with pytest.raises(CaptureError) as exc:
        CaptureFile(str(path))
    assert str(exc.value) == f"{path}: unknown file format"


def test_truncated_file_header(tmp_path):
    path = tmp_path / "short.pcap"
    write_pcap(path, [])
    _truncate(path, 10)
    with pytest.raises(CaptureError) as exc:
        CaptureFile(str(path))
    assert str(exc.value) == f"{path}: truncated dump file; tried to read 24 file header bytes, only got 10"  # libpcap does not count the magic
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with pytest.raises(CaptureError, match="tried to read 4 file header bytes, only got 0"):
        CaptureFile(str(empty))


def test_missing_and_unreadable(tmp_path):
    missing = tmp_path / "missing.pcap"
    with pytest.raises(CaptureError) as exc:
        CaptureFile(str(missing))
    assert str(exc.value) == f"{missing}: No such file or directory"
    with pytest.raises(CaptureError, match="Is a directory"):
        CaptureFile(str(tmp_path))


def test_close_is_idempotent_and_stops_iteration(tmp_path):
    path = tmp_path / "c.pcap"
    write_pcap(path, [(1.0, b"x" * 60)] * 5)
    cap = CaptureFile(str(path), batch=2)
    it = cap.batches()
    assert len(next(it)) == 2
    cap.close()
    cap.close()
    assert list(it) == []


def test_ipv4_and_ipv6_linktypes_read_back(tmp_path):
    for lt, fam in ((DLT_IPV4, "v4"), (DLT_IPV6, "v6"), (DLT_NULL, "v6"), (DLT_LOOP, "v4"), (DLT_LINUX_SLL, "v4")):
        path = tmp_path / f"{lt}.pcap"
        write_pcap(path, sample_frames(lt, fam), lt)
        cap, _ = read_all(path)
        assert cap.linktype == lt


# -- the fast path's reader (rtp2ws._fastpath.Reader and its twin here) -------------------


@pytest.fixture(params=["native", "python"])
def backend(request):
    if request.param not in BACKENDS:
        from skips import native_skip_reason
        pytest.skip(native_skip_reason())
    return request.param


def _run_all(reader):
    """Every (ts, frame) of ``reader`` as ``FastPath.run`` reads it with no flow armed
    (the C reader is read only there)."""
    from rtp2ws.fastpath.twin import EOF, TICK, for_reader, tables

    cls, _ = for_reader(reader)
    fp = cls(link_layer(reader.linktype), 0, *tables())
    out = []
    while (r := fp.run(reader, float("inf"), 1000)) != EOF:
        if r != TICK:
            out.append(r)
    return out


@pytest.mark.parametrize("fmt", ["pcap", "pcap-ns", "pcapng"])
def test_reader_reads_what_batches_yield(tmp_path, backend, fmt):
    path = tmp_path / f"cap.{fmt}"
    frames = sample_frames(DLT_LINUX_SLL, "v6") * 3
    WRITERS[fmt](path, frames, DLT_LINUX_SLL)
    _, batches = read_all(path, batch=2)
    with CaptureFile(str(path), native=True, backend=backend) as cap:
        reader = cap.reader
        assert type(reader) is reader_class(backend) and cap.linktype == reader.linktype == DLT_LINUX_SLL
        assert _run_all(reader) == [p for b in batches for p in b]
        assert reader.packets_read == len(frames) and reader.bytes_read == cap.size
        assert reader.bad_timestamps == reader.first_bad_timestamp == 0
    with pytest.raises(ValueError, match="not opened with native=True"):
        CaptureFile(str(path)).reader


def test_python_reader_keeps_a_read_error_back(tmp_path):
    """``next_packet`` says None where the file breaks off and keeps libpcap's message
    for ``raise_error`` (once): ``FastPath.run`` ticks the packets before it first."""
    path = tmp_path / "cut.pcap"
    frames = [(100.0 + i, link(DLT_EN10MB, udp("10.0.0.1", 1, "10.0.0.2", 2, bytes([i]) * 50))) for i in range(5)]
    write_pcap(path, frames)
    _truncate(path, 20)
    reader = Reader(str(path))
    got = []
    while (item := reader.next_packet()) is not None:
        got.append(item)
    assert got == [(t, f) for t, f in frames[:4]] and reader.packets_read == 4
    assert reader.error.startswith("truncated dump file")
    with pytest.raises(ReadError, match="^truncated dump file"):
        reader.raise_error()
    assert reader.error is None and reader.next_packet() is None
    reader.raise_error()                 # nothing kept back: nothing raised
    reader.close()
    with pytest.raises(OSError, match="unknown file format"):
        Reader(__file__)


def test_capture_does_not_import_the_fast_path():
    """The reader twin lives here, with capture; nothing in rtp2ws.capture imports
    rtp2ws.fastpath (or anything above net and capture), at the top or inside a function."""
    root = ROOT / "rtp2ws" / "capture"
    allowed = {"speedups", "argtypes", "codec", "net", "capture", "_fastpath"}
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                top = "capture" if node.level == 1 else (node.module or "").split(".")[0]
                assert top in allowed, f"{path.name} imports {'.' * node.level}{node.module}"
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    parts = name.split(".")
                    assert parts[0] != "rtp2ws" or len(parts) == 1 or parts[1] in allowed, \
                        f"{path.name} imports {name}"


@pytest.mark.parametrize("fmt", ["pcap", "pcap-ns", "pcapng"])
def test_reader_and_batches_give_the_same_float_for_every_time(tmp_path, backend, fmt):
    """The same capture time as the same double from both readers, to the last bit: the C
    reader once divided the nanoseconds by 1e9 where pypcap multiplies by 1e-9, which
    differs for about one time in eight near 0 s (0.06 s came out as 0.06 against
    pypcap's 0.060000000000000005), and the fast path's interarrival jitter with it."""
    src, dst = FAMILIES["v4"]
    frame = link(DLT_LINUX_SLL, udp(src, 40000, dst, 5004, b"\x80" * 172))
    times = [0.06, 0.230459, 0.249165, 1.384972] + [round(0.2 + 0.0213 * i + (i % 7) * 1e-3, 6) for i in range(200)]
    times += [1700000000.0 + t for t in times]
    path = tmp_path / f"cap.{fmt}"
    WRITERS[fmt](path, [(t, frame) for t in times], DLT_LINUX_SLL)
    _, batches = read_all(path, batch=64)
    with CaptureFile(str(path), native=True, backend=backend) as cap:
        got = [ts for ts, _ in _run_all(cap.reader)]
    assert [repr(ts) for ts in got] == [repr(ts) for b in batches for ts, _ in b]
