"""One module per fuzz target; each has ``INVARIANT`` (the documented contract it
checks), ``run(data, clock)`` and ``TestOneInput(data)``."""

TARGETS = ("packet", "fragments", "tcp", "sip", "sdp", "rtp", "dtmf", "calls", "sink", "fastpath", "codecs",
           "outbox", "pipeline", "audiohook",
           "rtcp", "wsstream", "srtp")
