"""Memory per live call, and where it goes: ``python -m rtp2ws.bench memory`` as a script.

    python benchmarks/memory_per_call.py [--calls 200,1000] [--seconds 20] [--config ws20] [--no-trace]

See rtp2ws/bench/memory.py for what is measured and how; results go to
benchmarks/results/ (memory_per_call.json, .txt).  Memory is measured here, never
asserted in tests by RSS.
"""

import sys

from rtp2ws.bench.memory import main

if __name__ == "__main__":
    sys.exit(main())
