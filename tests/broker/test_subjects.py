"""broker.subjects: a Call-ID as one subject token, whatever it holds; ids and formats."""

import pytest

from rtp2ws.broker import subjects as sj


@pytest.mark.parametrize("call_id", ["a84b4c76e66710@pc33.atlanta.com", "x.y*z>w", "with space\tand\nnewline",
                                     "ümlaut-€", "%41 not an escape", "~tilde", "", "1-14710@127.0.0.1",
                                     "rtp:10.0.0.1:4000-[2001:db8::1]:5000", "\ud800lone"])
def test_a_call_id_is_one_safe_token_and_comes_back(call_id):
    tok = sj.token(call_id)
    assert tok and all(c.isascii() and c.isprintable() and c not in " .*>" for c in tok), tok
    assert sj.untoken(tok) == call_id
    subject = sj.audio_subject("rtp2ws", call_id, "caller#2")
    assert subject.split(".") == ["rtp2ws", "audio", tok, "caller%232"]


def test_distinct_call_ids_make_distinct_tokens():
    ids = ["a.b", "a_b", "a%2Eb", "a b", "a+b", "", "%", "~"]
    assert len({sj.token(i) for i in ids}) == len(ids)


def test_a_long_call_id_is_cut_with_a_digest_and_stays_apart():
    a, b = "x." * 300 + "a", "x." * 300 + "b"
    ta, tb = sj.token(a), sj.token(b)
    assert len(ta) <= sj.MAX_TOKEN and len(tb) <= sj.MAX_TOKEN and ta != tb
    assert "~" in ta
    with pytest.raises(ValueError, match="cut"):
        sj.untoken(ta)
    # never half an escape before the digest
    body = ta.rpartition("~")[0]
    assert not body.endswith("%") and body[-2:-1] != "%"


def test_ids_and_format():
    assert sj.audio_id("s1", 320) == "s1:320"
    assert sj.record_id("s1", "start", 0) == "s1:start" and sj.record_id("s1", "end", 9) == "s1:end"
    assert sj.record_id("s1", "hold", 3) == "s1:r3" and sj.end_marker_id("s1") == "s1:eos"
    f = sj.Format("PCMU", 8000, 2)
    assert sj.Format.parse(f.header()) == f and f.header() == "PCMU/8000/2"
    for bad in ("L16/16000", "L16/x/1", "", "L16/16000/1/2"):
        with pytest.raises(ValueError):
            sj.Format.parse(bad)


@pytest.mark.parametrize("bad", ["", "a..b", "a.*", "a.>", "a b", ".a", "a."])
def test_prefixes_that_would_not_make_subjects_are_refused(bad):
    with pytest.raises(ValueError):
        sj.check_prefix(bad)
    assert sj.check_prefix("contact-centre.eu_1") == "contact-centre.eu_1"


def test_credentials_in_a_url_are_hidden():
    url = "nats://rtp2ws:s3cret@nats-1:4222,nats://rtp2ws:s3cret@nats-2:4222"
    assert "s3cret" not in sj.redact_url(url) and "nats-2:4222" in sj.redact_url(url)
    assert sj.redact_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
