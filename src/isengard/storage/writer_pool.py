"""Writer processes: they write and fsync the storage area's new files while the server parses
and indexes the instance.

A thread of the server cannot do this well: it needs the GIL to start its fsync and to report
the end of it, and the server's thread keeps the GIL while it parses, so the fsync began only
when indexing did (measured: 0.6 ms after the write was handed over, for 9 KB CT slices). A
process has its own interpreter and starts at once.
"""

import queue
import subprocess
import sys
import threading

from . import writer as program
from .writer import ANSWER, REQUEST, STOPPED, SYNC, read_exactly, write_all


class WriterProcess:
    """A writer process, used by one thread at a time (see WriterPool)."""

    def __init__(self) -> None:
        # In a session of its own, a writer is not interrupted by the Ctrl+C meant for the server,
        # which stops it by closing its pipe (as the end of the server does, however abrupt).
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", program.__file__],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, start_new_session=True,
        )
        self._requests = self._process.stdin.fileno()  # type: ignore[union-attr]
        self.answers = self._process.stdout.fileno()  # type: ignore[union-attr]  # an event loop may wait on it

    def send(self, path: str, data: bytes, sync: bool) -> bool:
        """Hand over a file; False if the writer is gone."""
        encoded = path.encode()
        try:
            write_all(self._requests, REQUEST.pack(SYNC if sync else 0, len(encoded), len(data)) + encoded)
            write_all(self._requests, data)
        except OSError:  # BrokenPipeError: the writer died
            return False
        return True

    def answer(self) -> int:
        """Wait for the end of the write: its errno, 0 on success, STOPPED if the writer died."""
        answer = read_exactly(self.answers, ANSWER.size)
        return STOPPED if answer is None else ANSWER.unpack(answer)[0]

    def close(self) -> None:
        close_process(self._process)


def close_process(process: subprocess.Popen) -> None:
    """End a worker process by closing its pipes, as the end of the server does (killed after 10 s)."""
    for stream in (process.stdin, process.stdout):
        stream.close()  # type: ignore[union-attr]
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class WriterPool:
    """Up to `size` writer processes, started when first needed, each lent to one caller at a time."""

    def __init__(self, size: int):
        self._size = size
        self._idle: queue.SimpleQueue[WriterProcess] = queue.SimpleQueue()
        self._all: list[WriterProcess] = []
        self._lock = threading.Lock()
        self._closed = False

    def borrow(self) -> WriterProcess | None:
        """An idle writer, or None when all are busy (the caller then writes the file itself)."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed or len(self._all) >= self._size:
                return None
            try:
                writer = WriterProcess()
            except OSError:
                return None
            self._all.append(writer)
            return writer

    def give_back(self, writer: WriterProcess, alive: bool) -> None:
        if alive:
            self._idle.put(writer)
            return
        with self._lock:  # a dead writer's place goes to a new one, on demand
            if writer in self._all:  # else closed with the pool
                self._all.remove(writer)
        writer.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            writers, self._all = self._all, []
        for writer in writers:
            writer.close()
