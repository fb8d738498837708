"""The capacity benchmark (``rtp2ws bench``, ``python -m rtp2ws.bench``).

``netgen`` builds packets and pcap records (shared with the tests' netgen and
callgen), ``capgen`` generates N-call captures from them, ``discard`` is the
WebSocket sink the runs stream to, ``harness`` runs each configuration in a
child process and measures it, and ``report`` attributes CPU to stages and
writes the table and the JSON document.
"""
