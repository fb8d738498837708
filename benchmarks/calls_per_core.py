"""How many concurrent calls one CPU core carries: ``rtp2ws bench`` as a script.

    python benchmarks/calls_per_core.py [--calls N | --sweep 10,100,500,1000,2000] [--seconds S]
        [--configs wav,ws20,ws100,stereo,reference,reference_wav] [--latency] [--quick] [--out DIR]

See rtp2ws/bench/ for what is measured and how; results go to
benchmarks/results/ (calls_per_core.json, .png, .txt; generated captures in
captures/).  Speed is measured here, never asserted in tests.
"""

import sys

from rtp2ws.bench.harness import main

if __name__ == "__main__":
    sys.exit(main())
