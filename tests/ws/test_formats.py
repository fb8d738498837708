"""ws.formats: the tag each format's messages carry."""

import pytest

from rtp2ws.sinks.wav import folder_name
from rtp2ws.ws import formats


def test_rtp2ws_keeps_the_legs_own_tag():
    for tag in ("caller", "callee", "caller#2", "stereo"):
        assert formats.wire_tag("rtp2ws", "a84b4c76e66710@pc33", tag) == tag


def test_seed_names_the_stream_by_call_and_leg():
    assert formats.wire_tag("seed", "a84b4c76e66710@pc33", "caller") == "a84b4c76e66710@pc33-caller"
    assert formats.wire_tag("seed", "a84b4c76e66710@pc33", "callee#2") == "a84b4c76e66710@pc33-callee#2"


@pytest.mark.parametrize("key", ["../../etc/passwd", "a/b", "x#2", "", ".", "..", "tab\there", "é@host"])
def test_seed_tags_are_one_file_name_and_tell_calls_apart(key):
    tag = formats.wire_tag("seed", key, "caller")
    name = tag + ".pcm"
    assert "/" not in name and "\0" not in name and name not in (".", "..")
    assert tag == folder_name(key) + "-caller"


def test_seed_tags_of_calls_that_look_alike_differ():
    keys = ["a/b", "a_b", "a?b", "a/b#2"]
    assert len({formats.wire_tag("seed", k, "caller") for k in keys}) == len(keys)


def test_an_unknown_format_is_refused_with_the_list():
    with pytest.raises(ValueError, match="rtp2ws, seed"):
        formats.check("twilio-ish")
    assert formats.check("seed") == "seed"
