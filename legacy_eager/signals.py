"""SIGINT and SIGTERM, handled instead of killing the process mid-write: framework-free, so
the training loop and the repro driver share one mechanism."""
import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_handled(handler):
    """`handler(signum, frame)` for SIGINT and SIGTERM inside the block, the previous
    handlers after it. Set here, not inherited: a process started in the background (where
    the shell ignores SIGINT) still reacts to `kill -INT`. Only the main thread can set
    handlers; elsewhere the block runs with the process's own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def signals_recorded():
    """SIGINT and SIGTERM set a flag (read by the training loop between steps) instead
    of killing the process mid-write. Yields a function returning the signal or None."""
    caught = []
    with signals_handled(lambda signum, frame: caught.append(signum)):
        yield lambda: caught[0] if caught else None
