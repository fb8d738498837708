"""Soak, short: real calls inside floods, bounded memory, every real call exact (issue 10).

The capture (``tests/soak.py``) mixes INVITEs without BYE, RTP without SIP, hostile
SIP, unfinished TCP, fragment storms and a two-hour clock jump with 40 real calls.
The long run is ``python tests/soak.py --rounds 20``.
"""

from __future__ import annotations

import soak


def test_soak_real_calls_exact_in_bounded_memory(tmp_path):
    res = soak.run(str(tmp_path), rounds=2)
    assert res["returncode"] == 0, res["stderr"]
    assert res["problems"] == [], res["problems"]
    assert res["real_calls"] == 80 and res["calls_in_manifest"] >= 40080
    assert "Traceback" not in res["stderr"]
    assert res["peak_rss_mb"] < soak.RSS_BOUND_MB, res
    s = res["summary"]
    assert s["internal_errors"] == 0, res["stderr"]       # every hostile packet is a documented error
    assert s["malformed"] >= 2 * 2000                      # the hostile SIP, counted
    assert s["decoder_frag_dropped"] > 0 and s.get("bad_timestamps", 0) == 0
    assert s["tcp_holes_timed_out"] > 0 and s["tcp_flows_opened"] >= 2 * 2000
