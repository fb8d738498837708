"""rtp2ws: mirrored SIP/RTP traffic in, per-call 16 kHz audio out.

The protocol layers (packet decode, SIP, SDP, call registry, RTP, jitter
buffer, codecs, resampler) are sans-I/O: bytes and a ``now`` go in, typed
results come out.  Files, libpcap and sockets live in thin adapters
(``capture``, ``replay``, ``cli``).
"""

__version__ = "0.1.0"

import os as _os

# numpy's OpenBLAS starts a thread per core that spins after any BLAS call; nothing
# here needs it, and on a mirror host those cores belong to the capture.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
