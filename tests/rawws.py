"""WebSocket servers that misbehave where websockets' own server cannot.

websockets' server parses whatever reaches it and answers pings and the closing
handshake at once, before the handler looks at the messages: a handler cannot
die between reading ``end`` and answering the close, nor stop the reading of
frames already received.  ``RawServer`` runs websockets' sans-I/O
``ServerProtocol`` over asyncio streams, so the test decides: ``read=False``
accepts and then never reads another byte; ``crash(index, messages)``, asked
after every message, aborts the connection there, before any answer to what
came with that message (pongs, the close) is written.
"""

from __future__ import annotations

import asyncio
import threading

from websockets.frames import Opcode
from websockets.server import ServerProtocol


class RawServer:
    """``await RawServer(...).start()``; ``port``; ``conns``: the messages of each
    connection (``str`` or ``bytes``); ``accepted``; ``await stop()``."""

    def __init__(self, *, read: bool = True, crash=None) -> None:
        self.read = read
        self.crash = crash
        self.conns: list[list] = []
        self.port = None
        self._server = None
        self._writers: list = []

    @property
    def accepted(self) -> int:
        return len(self.conns)

    async def start(self, port: int = 0) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proto = ServerProtocol(max_size=None)
        events: list = []
        while not events:                       # the HTTP upgrade request (the client waits for the answer)
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            proto.receive_data(data)
            events = proto.events_received()
        proto.send_response(proto.accept(events[0]))
        writer.write(b"".join(proto.data_to_send()))
        index = len(self.conns)
        msgs: list = []
        self.conns.append(msgs)
        self._writers.append(writer)
        if not self.read:
            writer.transport.pause_reading()    # never another byte
            return
        while True:
            data = await reader.read(65536)
            if not data:
                proto.receive_eof()
            else:
                proto.receive_data(data)
            for event in proto.events_received():
                if event.opcode is Opcode.TEXT:
                    msgs.append(event.data.decode())
                elif event.opcode is Opcode.BINARY:
                    msgs.append(bytes(event.data))
                else:
                    continue
                if self.crash is not None and self.crash(index, msgs):
                    writer.transport.abort()    # nothing it owed the client is written
                    return
            for out in proto.data_to_send():
                if out:
                    writer.write(out)
                else:
                    writer.close()
                    return
            if not data:
                writer.close()
                return

    async def stop(self) -> None:
        for w in self._writers:
            w.transport.abort()
        self._server.close()
        await self._server.wait_closed()


class ThreadedRawServer:
    """A ``RawServer`` in a thread of its own (for a client in another process)."""

    def __init__(self, **kw) -> None:
        self._ready = threading.Event()
        self._loop = None
        self._done = None
        self.server = RawServer(**kw)

        async def main():
            self._loop = asyncio.get_running_loop()
            self._done = self._loop.create_future()
            await self.server.start()
            self._ready.set()
            await self._done
            await self.server.stop()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        self.url = f"ws://127.0.0.1:{self.server.port}/"

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._done.set_result, None)
        self._thread.join(10)
