"""Publishing every stream to a message broker (NATS JetStream): what goes on it
(``subjects``) and the publisher (``publisher``, asyncio and nats-py, beside ``ws``).
The consumer that rebuilds WAVs from it is a program of its own,
``rtp2ws.sinkserver.consume``."""
