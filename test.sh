#!/usr/bin/env bash
# Runs the whole test suite in the environment install.sh made.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PWD/.venv/bin:$PATH"     # the rtp2ws command, as install.sh left it
exec .venv/bin/python -m pytest "$@"
