"""What Ctrl-C does to the scripts that train and calibrate: end at once, or wait.

Python turns Ctrl-C into a KeyboardInterrupt that unwinds the stack. Raised
inside Keras' `fit` or `predict`, it leaves tf.data's threads running under
the unwinding and the interpreter's teardown: glibc aborted the process in
two clean-clone CI runs ("free(): invalid next size (fast)", "malloc():
unaligned tcache chunk detected"), once even with the teardown skipped.
While nothing is being written, ending the process at once loses nothing;
while files that belong together are written, it waits until they all are.
"""

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

# Status of a script stopped by Ctrl-C, as for its other errors (`sys.exit`
# with a message).
INTERRUPTED_STATUS = 1


@contextlib.contextmanager
def end_at_once(message: str) -> Iterator[None]:
    """Inside the block, Ctrl-C prints `message` on stderr and ends the process.

    No stack unwinding, no clean-up and no interpreter teardown: use it only
    where nothing is being written. Where SIGINT is ignored (a job started in
    the background), it stays ignored.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        yield
        return

    signal.signal(signal.SIGINT, lambda signal_number, frame: _end(message))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def held_then_end(message: str) -> Iterator[None]:
    """Inside the block, Ctrl-C waits: the block ends, then as `end_at_once`.

    For writes that belong together (a model and its metrics): an interrupt
    stops the run after both, never between them.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        yield
        return
    pressed = []
    signal.signal(signal.SIGINT, lambda signal_number, frame: pressed.append(signal_number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        _end(message)


def _end(message: str) -> None:
    # os.write, not print: a signal handler may run in the middle of a print.
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        os.write(sys.stderr.fileno(), f"{message}\n".encode(errors="replace"))
    os._exit(INTERRUPTED_STATUS)
