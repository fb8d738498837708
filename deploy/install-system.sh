#!/usr/bin/env bash
# The system-wide part of rtp2ws's set-up (install.sh runs it as root, or with sudo, unless
# --no-system): what deploy/rtp2ws.service expects where it expects it.
#   /usr/local/bin/rtp2ws      a symbolic link to this checkout's .venv/bin/rtp2ws: the unit's
#                              ExecStart (and the command on PATH)
#   /usr/share/doc/rtp2ws/     README.md, docs/*.md, the unit and the example configuration:
#                              the unit's Documentation= (file:///usr/share/doc/rtp2ws/README.md)
# DESTDIR, when set, puts both under that directory instead of /, as packagers do.
# tests/system/test_deploy.py checks the unit against this layout.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${DESTDIR:-}
[ -x .venv/bin/rtp2ws ] || { echo "install-system.sh: .venv/bin/rtp2ws is missing: run install.sh first" >&2; exit 1; }
install -d -m 0755 "$root/usr/local/bin" "$root/usr/share/doc/rtp2ws"
ln -sfn "$PWD/.venv/bin/rtp2ws" "$root/usr/local/bin/rtp2ws"
install -m 0644 README.md docs/*.md deploy/rtp2ws.service deploy/rtp2ws.toml.example "$root/usr/share/doc/rtp2ws/"
echo "system: $root/usr/local/bin/rtp2ws -> $PWD/.venv/bin/rtp2ws; documentation in $root/usr/share/doc/rtp2ws/"
