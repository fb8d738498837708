"""``rtp2ws sink``, the reference analysis server: ``session`` (the sans-I/O
protocol state of one connection) and ``server`` (the websockets adapter,
the files and the logs)."""
