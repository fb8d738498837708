"""A time limit for code that used to loop forever: fail instead of hanging."""

import contextlib
import signal


@contextlib.contextmanager
def within(seconds: float):
    """Fail instead of hanging (the registry's and pipeline's timers once looped forever at 100 % CPU)."""
    def alarm(signum, frame):
        raise TimeoutError(f"did not return within {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
