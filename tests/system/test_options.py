"""Every numeric option has a checked range (issue 10, item 12).

``--rtp-timeout 0`` used to discard all audio, ``nan`` to never expire, and a
negative buffer to be taken as given.  Here every option of every subcommand
whose value is a number is found by walking the parser, so an option added
later without a range fails this test too.
"""

from __future__ import annotations

import argparse
import math

import pytest

from rtp2ws import cli
from rtp2ws.pipeline.pipeline import Config
from rtp2ws.tomlconfig import ConfigError, apply_config

BAD = ("nan", "inf", "-inf", "-1", "1e300", "abc", "")


def subparsers():
    p = cli.build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return p, sub.choices


def numeric_actions():
    """(command, option, action) for every option whose default is a number or whose
    type yields one."""
    _, subs = subparsers()
    out = []
    for name, sp in subs.items():
        for a in sp._actions:
            if not a.option_strings or a.option_strings[0] in ("-h",):
                continue
            numeric_default = isinstance(a.default, (int, float)) and not isinstance(a.default, bool)
            numeric_type = a.type in (int, float) or getattr(a.type, "kind", None) in (int, float)
            if numeric_default or numeric_type:
                out.append((name, a.option_strings[-1], a))
    return out


ACTIONS = numeric_actions()


def test_the_walk_finds_the_options_the_issue_names():
    found = {(c, o) for c, o, _ in ACTIONS}
    for c in ("replay", "live"):
        for o in ("--rtp-timeout", "--jitter-ms", "--max-buffer-ms", "--resend-ms", "--flush-ms",
                  "--max-connecting"):
            assert (c, o) in found
    assert ("live", "--snaplen") in found and ("live", "--buffer-mb") in found
    assert ("live", "--count") in found and ("replay", "--count") in found      # -c, as tcpdump's
    assert ("sink", "--max-size") in found and ("bench", "--loss") in found
    assert len(found) >= 25


@pytest.mark.parametrize("command, option, action", ACTIONS, ids=[f"{c} {o}" for c, o, _ in ACTIONS])
def test_every_numeric_option_has_a_range(command, option, action):
    """A checked type (rtp2ws.argtypes, or the option's own parser), never bare int/float,
    and nan, infinities, negatives and absurdly large values are refused."""
    assert action.type not in (int, float, None), f"{command} {option} takes any {action.type}"
    for text in BAD:
        with pytest.raises(argparse.ArgumentTypeError):
            action.type(text)
    if action.default is not None:          # the default itself is in range
        assert action.type(str(action.default)) == action.default


@pytest.mark.parametrize("argv", [
    ["replay", "c.pcap", "--out-dir", "o", "--rtp-timeout", "0"],
    ["replay", "c.pcap", "--out-dir", "o", "--rtp-timeout", "nan"],
    ["replay", "c.pcap", "--out-dir", "o", "--rtp-timeout", "-300"],
    ["replay", "c.pcap", "--out-dir", "o", "--jitter-ms", "nan"],
    ["replay", "c.pcap", "--out-dir", "o", "--speed", "nan"],
    ["replay", "c.pcap", "--out-dir", "o", "--speed", "inf"],
    ["replay", "c.pcap", "--ws-url", "ws://h/", "--max-buffer-ms", "-1"],
    ["replay", "c.pcap", "--ws-url", "ws://h/", "--resend-ms", "-5"],
    ["live", "-i", "lo", "--out-dir", "o", "--rtp-timeout", "0"],
    ["live", "-i", "lo", "--out-dir", "o", "--snaplen", "0"],
    ["live", "-i", "lo", "--out-dir", "o", "--stats-interval", "nan"],
    ["live", "-i", "lo", "--out-dir", "o", "-c", "0"],
    ["replay", "c.pcap", "--out-dir", "o", "-c", "-5"],
    ["sink", "--out-dir", "o", "--ping-interval", "-1"],
    ["bench", "--loss", "2"],
])
def test_out_of_range_values_are_refused_with_the_range(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument " + argv[-2] in err
    assert "Traceback" not in err


def test_config_file_values_go_through_the_same_ranges(tmp_path):
    parser = cli.build_parser()
    for text in ("rtp_timeout = 0\n", "rtp_timeout = nan\n", "jitter_ms = -1.0\n", "buffer_mb = 0\n",
                 "stats_interval = inf\n", "max_buffer_ms = 10000000\n"):
        path = tmp_path / "c.toml"
        path.write_text('interface = "lo"\nout_dir = "o"\n' + text)
        with pytest.raises(ConfigError) as e:
            apply_config(parser.live_parser, str(path), ["live", "--config", str(path)],
                         parse=parser.parse_args)
        assert str(e.value).startswith(str(path)) and "use a " in str(e.value)
    path.write_text('interface = "lo"\nrtp_timeout = 30\njitter_ms = 0\n')      # in range: taken
    args = apply_config(parser.live_parser, str(path), ["live", "--config", str(path)], parse=parser.parse_args)
    assert args.rtp_timeout == 30.0 and args.jitter_ms == 0.0


@pytest.mark.parametrize("kw", [{"rtp_timeout": 0}, {"rtp_timeout": math.nan}, {"rtp_timeout": -1.0},
                                {"rtp_timeout": math.inf}, {"jitter_depth": -0.01}, {"jitter_depth": math.nan},
                                {"flush_ms": -20}, {"deliver_ms": -1}])
def test_the_pipeline_config_refuses_what_the_options_refuse(kw):
    """The sans-I/O core checks too, for callers that are not the command line."""
    with pytest.raises(ValueError):
        Config(**kw)
