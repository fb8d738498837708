"""Fixtures for every test (the helpers shared by tests are modules beside this one)."""

import pytest

from livecall import LiveProcess, PhoneCall


@pytest.fixture(autouse=True)
def _collector_as_it_was():
    """Commands run in-process (``cli.main``) set the collector for a long-running
    decoder (``rtp2ws.run.gcpolicy``): give the next test CPython's own settings back,
    with nothing frozen, so that no test depends on which ran before it."""
    import gc
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


# -- rtp2ws live in a process and calls on loopback (livecall), closed after the test ------

@pytest.fixture
def call_factory():
    calls = []

    def make(*args):
        c = PhoneCall(*args)
        calls.append(c)
        return c
    yield make
    for c in calls:
        c.close()


@pytest.fixture
def live_factory():
    procs = []

    def make(*args):
        p = LiveProcess(*args)
        procs.append(p)
        return p
    yield make
    for p in procs:
        p.kill()
