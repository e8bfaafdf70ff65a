"""Wake pynetdicom's two threads per association when there is work, instead of every millisecond.

pynetdicom polls. Its DUL thread, when the socket has nothing to read and no PDU waits to be
sent, sleeps 1 ms before looking again; its association thread sleeps 1 ms between looks at its
queue of DIMSE messages, and a request sent by Isengard first waits for that thread to notice
it must pause. Each instance received or sent over an association pays several of those sleeps
(about 1.5 ms, as much as storing a small instance costs), and an idle association burns 7% of
a core.

Here the two sleeps become waits that end as soon as there is something to do:
- the DUL thread waits in select() on its socket and on a wake-up socket, written to whenever a
  primitive is queued for sending;
- the association thread waits on an Event set when it is asked to pause and, on the server
  side, when a DIMSE message or an ACSE primitive is queued for it.
Every wait keeps a timeout (TIMER_RESOLUTION), so that the timers and flags pynetdicom checks in
those loops (ARTIM and idle timers, kill requests) are still seen. Only the two sleeps of the
reactor loops change: any other sleep of pynetdicom's (callers waiting for a pause, a kill...)
is left as it is. Written for pynetdicom 3.0; `install()` refuses another major version.
"""

import queue
import select
import socket
import ssl
import sys
import threading
import time
import types
from typing import Any

import pynetdicom
import pynetdicom.association
import pynetdicom.dul
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

TIMER_RESOLUTION = 0.01  # seconds: how late a timer or a flag set without a wake-up may be seen


class _WakingQueue(queue.Queue):
    """A queue that calls `wake` after each put."""

    def __init__(self, wake: Any):
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class _Checkpoint:
    """The association's reactor checkpoint (an Event to pynetdicom): a caller clears it to pause
    the reactor, waits until the reactor says it is paused, exchanges messages, and sets it again.

    pynetdicom's own checkpoint lets a reactor released by `set()` run on while a caller that
    cleared it again right away still reads the reactor's previous "paused": both then take
    messages off the same queue, and the caller loses its answer. Here the reactor passes only
    while the checkpoint is set, and says it is no longer paused under the same lock, so a caller
    clearing the checkpoint sees either a reactor still paused, or one it must wait for.
    Clearing also wakes the reactor, so that it pauses at once."""

    def __init__(self, assoc: Association, wake: threading.Event):
        self._assoc = assoc
        self._wake = wake
        self._condition = threading.Condition(threading.Lock())
        self._open = True

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        with self._condition:
            self._open = True
            self._condition.notify_all()

    def clear(self) -> None:
        with self._condition:
            self._open = False
        self._wake.set()

    def wait(self, timeout: float | None = None) -> bool:
        with self._condition:
            passed = self._condition.wait_for(lambda: self._open, timeout)
            if passed:
                self._assoc._is_paused = False
            return passed


class _DulWaker:
    """A socket pair: writing to one end makes the DUL thread's select() return. Only a DUL about
    to wait is woken: a byte for every PDU queued (each C-FIND answer is one) would cost a system
    call, and the GIL it hands over, for nothing while the DUL thread is busy anyway."""

    def __init__(self, pending: queue.Queue):
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)
        self._pending = pending
        self._waiting = False

    def wake(self) -> None:
        # Called after the put: either the DUL, raising its flag first, then sees the primitive
        # in its queue, or this sees the flag.
        if not self._waiting:
            return
        try:
            self._writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the buffer is full (a wake-up is pending anyway), or the DUL has ended

    def wait(self, transport: socket.socket | None) -> None:
        self._waiting = True
        try:
            if self._pending.qsize():
                return
            watched = [self.reader] if transport is None else [self.reader, transport]
            try:
                readable, _, _ = select.select(watched, [], [], TIMER_RESOLUTION)
            except (OSError, ValueError):
                return  # the socket has closed: the reactor's next look reports it
        finally:
            self._waiting = False
        if self.reader in readable:
            self._drain()

    def _drain(self) -> None:
        try:
            while self.reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


def _wait_for_dul_work(dul: DULServiceProvider) -> None:
    transport = dul.socket.socket if dul.socket is not None else None
    if isinstance(transport, ssl.SSLSocket) and transport.pending():
        return  # decrypted bytes wait in the SSL buffer, where select() cannot see them
    dul._isengard_waker.wait(transport)


def _wait_for_association_work(assoc: Association) -> None:
    wake: threading.Event = assoc._isengard_wake
    wake.wait(TIMER_RESOLUTION)
    wake.clear()  # before the reactor looks at its queues: a later put sets it again


_ASSOCIATION_REACTOR = Association._run_reactor.__code__
_DUL_REACTOR = DULServiceProvider.run_reactor.__code__


def _sleep(seconds: float) -> None:
    caller = sys._getframe(1).f_code
    if caller is _DUL_REACTOR:
        _wait_for_dul_work(threading.current_thread())
    elif caller is _ASSOCIATION_REACTOR:
        _wait_for_association_work(threading.current_thread())
    else:
        time.sleep(seconds)


def _with_wake_ups(init: Any) -> Any:
    def __init__(self: Association, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        wake = self._isengard_wake = threading.Event()
        self._reactor_checkpoint = _Checkpoint(self, wake)
        if self.is_acceptor:
            # A requestor's messages are the answers its caller waits for: waking its reactor on
            # them would only widen pynetdicom's window where the reactor, not yet paused, takes
            # an answer off the queue before the caller does.
            self.dimse.msg_queue = _WakingQueue(wake.set)
            self.dul.to_user_queue = _WakingQueue(wake.set)
        self.dul.to_provider_queue = _WakingQueue(lambda: self.dul._isengard_waker.wake())
        self.dul._isengard_waker = _DulWaker(self.dul.to_provider_queue)

    return __init__


def _closing_waker(run_reactor: Any) -> Any:
    def run(self: DULServiceProvider) -> None:
        try:
            run_reactor(self)
        finally:
            self._isengard_waker.close()

    return run


def install() -> None:
    """Make the associations created from now on, in this process, wait this way."""
    if getattr(Association, "_isengard_wakes", False):
        return
    if not pynetdicom.__version__.startswith("3."):
        raise RuntimeError(f"isengard.network.reactor is written for pynetdicom 3, not {pynetdicom.__version__}")
    patched_time = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    patched_time.sleep = _sleep
    pynetdicom.association.time = patched_time
    pynetdicom.dul.time = patched_time
    Association.__init__ = _with_wake_ups(Association.__init__)
    DULServiceProvider.run_reactor = _closing_waker(DULServiceProvider.run_reactor)
    Association._isengard_wakes = True
