"""``python -m rtp2ws.bench``: the benchmark (``rtp2ws bench``'s options), ``sink``
(the discard sink) or ``child SPEC`` (one measured run), as ``harness.main``
dispatches them."""

import sys

from .harness import main

sys.exit(main())
