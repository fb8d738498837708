"""``rtp2ws consume``: per-leg WAVs rebuilt from the streams rtp2ws published to NATS
JetStream (``broker.publisher``; subjects and headers in ``broker.subjects``), written
by ``server.StreamStore`` as ``rtp2ws sink`` writes what it receives:
``<out-dir>/<safe call_id>/<tag>.wav``, byte-identical to ``--out-dir``'s once a stream
has ended, with ``streams.jsonl`` and ``messages.jsonl`` beside them.

A stream is a unit of work.  The workers of one *group* (``--group``, the name of a
durable pull consumer on ``<prefix>.calls`` that they share) pull the records; each
``start`` goes to one of them, which then reads that stream's audio subject from its
start on (an ephemeral pull consumer of its own, made again where it stopped if the
server lost it) and writes every message of that stream at its offset, until the end
marker.  Only
then is the ``start`` acknowledged (``in_progress`` keeps it while the stream lasts).
A worker that dies leaves its streams' starts unacknowledged: JetStream hands them
to a worker of the group again after ``ack_wait`` (``--ack-wait``, the group's durable
consumer's, set by the worker that creates it), which writes those streams again
from their beginning, at the same offsets.  Delivery is at least once and the writes
idempotent, so nothing is lost and nothing is written twice.  Other records (``end``,
events, ``drop``) are logged in ``messages.jsonl`` by whichever worker pulls them.

Several hosts share the calls by running ``rtp2ws consume`` with the same ``--group``
(each its own ``--out-dir``, or a shared one); a worker takes at most
``--max-streams`` streams at a time, so a busy worker leaves the next ones to the
others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..broker import subjects as sj
from .server import Refusal, StreamFile, StreamStore

log = logging.getLogger("rtp2ws.consume")

BATCH = 256                  # audio messages pulled at once
PROGRESS_S = 5.0             # a stream's start is marked in progress this often (at most a third of ack_wait)
CHECK_S = 5.0                # a reading consumer is looked up after this long without messages
DEFAULT_GROUP = sj.DEFAULT_GROUP


@dataclass
class ConsumeConfig:
    url: str
    out_dir: str
    stream: str = sj.DEFAULT_STREAM
    prefix: str = sj.DEFAULT_PREFIX
    group: str = DEFAULT_GROUP
    max_streams: int = 256
    ack_wait_s: float = 30.0          # a dead worker's streams go to another this long after its last sign
    idle_timeout_s: float = 60.0      # a stream with no message this long ends without its end marker
    exit_idle_s: float | None = None  # exit once nothing was taken this long and no stream is open

    def __post_init__(self) -> None:
        sj.check_prefix(self.prefix)
        sj.check_stream_name(self.stream)
        sj.check_stream_name(self.group)
        if self.ack_wait_s < 1.0:
            raise ValueError(f"ack_wait must be at least 1 s, not {self.ack_wait_s:g}")

    @property
    def progress_s(self) -> float:
        """How often a stream being written says so (``in_progress``): well within ack_wait,
        so a live worker's stream is not handed to another."""
        return min(PROGRESS_S, self.ack_wait_s / 3)


class Consumer:
    def __init__(self, config: ConsumeConfig) -> None:
        self.config = config
        self.store = StreamStore(config.out_dir)
        self.active: dict[str, asyncio.Task[None]] = {}
        self.stats = {"streams": 0, "ended": 0, "timed_out": 0, "messages": 0, "records": 0, "bad": 0,
                      "rereads": 0}
        self._last_work = time.monotonic()
        self._js: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        import nats
        from nats.js import api

        cfg = self.config
        nc = await nats.connect(cfg.url.split(","), allow_reconnect=True, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.25, name=f"rtp2ws-consume {cfg.group}")
        try:
            js = self._js = nc.jetstream()
            await self._wait_for_stream(js, stop)
            calls = await js.pull_subscribe(
                sj.calls_subject(cfg.prefix), durable=cfg.group, stream=cfg.stream,
                config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=cfg.ack_wait_s,
                                          deliver_policy=api.DeliverPolicy.ALL, max_ack_pending=-1))
            print(f"rtp2ws consume: group {cfg.group} on stream {cfg.stream} ({cfg.prefix}.>) "
                  f"writing to {cfg.out_dir}", flush=True)
            while not stop.is_set():
                await self._pull(calls)
                if (cfg.exit_idle_s is not None and not self.active
                        and time.monotonic() - self._last_work > cfg.exit_idle_s):
                    break
        finally:
            for task in list(self.active.values()):
                task.cancel()
            if self.active:
                await asyncio.gather(*self.active.values(), return_exceptions=True)
            await nc.close()
            self.store.close()

    async def _wait_for_stream(self, js: Any, stop: asyncio.Event) -> None:
        from nats.js.errors import NotFoundError

        said = False
        while not stop.is_set():
            try:
                await js.stream_info(self.config.stream)
                return
            except NotFoundError:
                if not said:
                    log.warning("no JetStream stream %s yet: waiting for rtp2ws to create it", self.config.stream)
                    said = True
            await asyncio.sleep(0.5)

    async def _pull(self, calls: Any) -> None:
        room = self.config.max_streams - len(self.active)
        if room <= 0:
            await asyncio.wait(list(self.active.values()), return_when=asyncio.FIRST_COMPLETED)
            return
        try:
            msgs = await calls.fetch(min(room, 64), timeout=1.0)
        except asyncio.TimeoutError:
            return
        except Exception as e:  # noqa: BLE001 - the server away: nats-py reconnects, we ask again
            log.debug("fetch: %s", e)
            await asyncio.sleep(0.25)
            return
        for m in msgs:
            self._last_work = time.monotonic()
            await self._record(m)

    async def _record(self, m: Any) -> None:
        try:
            rec = json.loads(m.data)
            if not isinstance(rec, dict) or not isinstance(rec.get("stream_id"), str):
                raise ValueError("not a record")
        except ValueError:
            self.stats["bad"] += 1
            await m.ack()
            return
        self.stats["records"] += 1
        sid = rec["stream_id"]
        if rec.get("type") != "start":
            self.store.log_message(time.time(), sid, "nats", rec)
            await m.ack()
            return
        if sid in self.active:
            return                # handed to us again while we write it: the task acknowledges
        headers = m.headers or {}
        try:
            subject = headers.get(sj.SUBJECT) or sj.audio_subject(self.config.prefix, rec["call_id"], rec["tag"])
            s, created = self.store.attach(rec, time.time())
        except (KeyError, TypeError, ValueError, Refusal) as e:
            log.warning("stream %s: unusable start (%s), skipped", sid, e)
            self.stats["bad"] += 1
            await m.ack()
            return
        except OSError as e:
            log.error("stream %s: %s", sid, e)
            return                # not acknowledged: another worker (or we, later) tries again
        if not created:
            self.stats["rereads"] += 1
        self.store.log_message(time.time(), sid, "nats", rec)
        self.stats["streams"] += 1
        task = asyncio.get_running_loop().create_task(self._read(s, subject, m))
        self.active[sid] = task
        task.add_done_callback(partial(self._done, sid))

    def _done(self, sid: str, _task: asyncio.Task[None]) -> None:
        self.active.pop(sid, None)

    async def _read(self, s: StreamFile, subject: str, start: Any) -> None:
        """Every message of the stream's audio subject, written at its offset, until its end."""
        from nats.js import api

        cfg = self.config
        js = self._js
        # the stream's messages follow its start in the JetStream stream (published after it, in
        # order): reading begins there, and skips another stream's on the subject (the same
        # Call-ID again, or a call published twice)
        last_seq = start.metadata.sequence.stream
        sub: Any = None
        name = ""
        last_msg = last_progress = time.monotonic()
        last_check = last_msg
        end: dict[str, Any] | None = None
        try:
            while end is None:
                now = time.monotonic()
                if now - last_progress > cfg.progress_s:
                    last_progress = now
                    try:
                        await start.in_progress()
                    except Exception as e:  # noqa: BLE001 - away: the start may be redelivered, harmless
                        log.debug("in_progress: %s", e)
                if sub is None:
                    name = f"{cfg.group}-{s.stream_id}"[:60] + f"-{int(now * 1000) % 100000}"
                    config = api.ConsumerConfig(
                        name=name, filter_subject=subject, ack_policy=api.AckPolicy.ALL, inactive_threshold=60.0,
                        mem_storage=True,
                        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last_seq + 1)
                    try:
                        await js.add_consumer(cfg.stream, config=config)
                        sub = await js.pull_subscribe_bind(consumer=name, stream=cfg.stream)
                    except Exception as e:  # noqa: BLE001 - the server away: try again
                        log.debug("stream %s: reading consumer: %s", s.stream_id, e)
                        await asyncio.sleep(0.25)
                        continue
                try:
                    msgs = await sub.fetch(BATCH, timeout=min(1.0, cfg.progress_s))
                except asyncio.TimeoutError:
                    msgs = []
                except Exception as e:  # noqa: BLE001 - its consumer gone with a server restart
                    log.debug("stream %s: fetch: %s", s.stream_id, e)
                    await self._drop(sub, name)
                    sub = None
                    await asyncio.sleep(0.25)
                    continue
                now = time.monotonic()
                if not msgs:
                    if now - last_msg > cfg.idle_timeout_s:
                        log.warning("stream %s: nothing for %g s and no end: closed at %d samples", s.stream_id,
                                    cfg.idle_timeout_s, s.samples)
                        self.stats["timed_out"] += 1
                        break
                    if now - last_check > CHECK_S:     # a restarted server forgot the consumer?
                        last_check = now
                        try:
                            await js.consumer_info(cfg.stream, name)
                        except Exception:  # noqa: BLE001
                            await self._drop(sub, name)
                            sub = None
                    continue
                last_msg = last_check = now
                for x in msgs:
                    seq = x.metadata.sequence.stream
                    if seq <= last_seq:
                        continue
                    last_seq = seq
                    end = self._message(s, x)
                    if end is not None:
                        break
                try:
                    await msgs[-1].ack()
                except Exception as e:  # noqa: BLE001
                    log.debug("ack: %s", e)
            if end is not None:
                self.store.finish(s, end, time.time())
                self.stats["ended"] += 1
        finally:
            self.store.detach(s)
            if sub is not None:
                await self._drop(sub, name)
        try:
            await start.ack()
        except Exception as e:  # noqa: BLE001 - not acknowledged: read again later, idempotent
            log.debug("start ack: %s", e)
        self._last_work = time.monotonic()

    def _message(self, s: StreamFile, x: Any) -> dict[str, Any] | None:
        """One message of a stream's subject: audio written; the end marker's record returned."""
        headers = x.headers or {}
        if headers.get(sj.STREAM) != s.stream_id:
            return None
        self.stats["messages"] += 1
        try:
            if sj.END in headers:
                end = json.loads(x.data)
                return end if isinstance(end, dict) else {}
            fmt = sj.Format.parse(headers[sj.FORMAT])
            if (fmt.codec, fmt.sample_rate, fmt.channels) != (s.codec, s.sample_rate, s.channels):
                raise ValueError(f"format {fmt.header()} is not the stream's")
            offset = int(headers[sj.OFFSET])
            if offset < 0 or len(x.data) % s.block:
                raise ValueError(f"offset {offset}, {len(x.data)} bytes")
            self.store.write(s, offset, x.data)
        except (KeyError, ValueError, Refusal) as e:
            self.stats["bad"] += 1
            log.warning("stream %s: message skipped: %s", s.stream_id, e)
        return None

    async def _drop(self, sub: Any, name: str) -> None:
        try:
            await sub.unsubscribe()
            await self._js.delete_consumer(self.config.stream, name)
        except Exception as e:  # noqa: BLE001 - gone already, or the server away (inactive_threshold cleans up)
            log.debug("delete consumer %s: %s", name, e)


def run_consume(config: ConsumeConfig) -> int:
    try:
        os.makedirs(config.out_dir, exist_ok=True)
    except OSError as e:
        print(f"rtp2ws: error: --out-dir {config.out_dir}: {e.strerror or e}", file=sys.stderr)
        return 2

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        consumer = Consumer(config)
        try:
            await consumer.run(stop)
        except Exception as e:  # noqa: BLE001 - cannot connect: one line
            print(f"rtp2ws: error: NATS at {sj.redact_url(config.url)}: {e or type(e).__name__}", file=sys.stderr)
            return 2
        st = consumer.stats
        print(f"consumed {st['streams']} streams ({st['ended']} ended, {st['timed_out']} timed out, "
              f"{st['rereads']} read again), {st['messages']} messages, {st['records']} records, "
              f"{st['bad']} skipped", flush=True)
        return 0

    try:
        import uvloop
        return uvloop.run(main())
    except ImportError:
        return asyncio.run(main())
