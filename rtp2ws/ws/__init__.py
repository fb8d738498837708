"""The WebSocket side: per-stream operations out to an analysis server.

* ``protocol``: the message shapes (JSON Schemas, close codes, ``encode``);
* ``frame``: RFC 6455 client framing of a batch of messages into one buffer
  (C twin ``rtp2ws._wsframe``);
* ``outbox``: one stream's queue, sans I/O (drop-oldest, the resend window,
  offsets, the counts, what counts as delivered; C twin in ``rtp2ws._wsframe``);
* ``wire``: one plain-TCP connection's writes, straight to its socket from
  whichever thread has them, and ``send_batches`` (every ready stream's frames
  in one call; C twins in ``rtp2ws._wsframe``);
* ``sender``: the asyncio adapter, one websockets connection per stream;
* ``bridge``: the pipeline thread's side: it queues each tick's operations and
  writes them.

The operations themselves come from ``rtp2ws.sinks.streams`` (pipeline output
to per-stream audio); the receiving end is ``rtp2ws.sinkserver``.
"""
