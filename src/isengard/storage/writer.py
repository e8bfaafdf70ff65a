"""Writer processes: they write and fsync the storage area's new files while the server parses
and indexes the instance.

A thread of the server cannot do this well: it needs the GIL to start its fsync and to report
the end of it, and the server's thread keeps the GIL while it parses, so the fsync began only
when indexing did (measured: 0.6 ms after the write was handed over, for 9 KB CT slices). A
process has its own interpreter and starts at once.

This file is also the writer's program, run as a script (`python -I -S writer.py`): it imports
nothing but the standard library, which keeps each writer at a few MiB.

The protocol, over the writer's stdin and stdout: a request is a header (flags, path length,
data length), the path in UTF-8 and the data; the answer is the errno of the write (0 when the
file is complete, and synced if asked, under that path).
"""

import os
import queue
import struct
import subprocess
import sys
import threading

REQUEST = struct.Struct("<BII")
ANSWER = struct.Struct("<i")
SYNC = 1
STOPPED = -1  # errno of the answer when the writer is gone


class WriterProcess:
    """A writer process, used by one thread at a time (see WriterPool)."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        self._requests = self._process.stdin.fileno()  # type: ignore[union-attr]
        self._answers = self._process.stdout.fileno()  # type: ignore[union-attr]

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
        answer = _read_exactly(self._answers, ANSWER.size)
        return STOPPED if answer is None else ANSWER.unpack(answer)[0]

    def close(self) -> None:
        for stream in (self._process.stdin, self._process.stdout):
            stream.close()  # type: ignore[union-attr]
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


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
            self._all.remove(writer)
        writer.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            writers, self._all = self._all, []
        for writer in writers:
            writer.close()


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytes | None:
    """`size` bytes, or None at the end of the stream."""
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# -- the writer's program ------------------------------------------------------------------------


def serve(requests: int = 0, answers: int = 1) -> None:
    """Write files until the server closes the pipe."""
    while (header := _read_exactly(requests, REQUEST.size)) is not None:
        flags, path_size, data_size = REQUEST.unpack(header)
        path, data = _read_exactly(requests, path_size), _read_exactly(requests, data_size)
        if path is None or data is None:
            return
        os.write(answers, ANSWER.pack(write_file(path.decode(), data, bool(flags & SYNC))))


def write_file(path: str, data: bytes, sync: bool) -> int:
    """Create or replace the file at `path`, creating its folders; the errno of a failure, or 0."""
    try:
        fd = create_file(path)
        try:
            write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return exc.errno or STOPPED
    return 0


def create_file(path: str) -> int:
    """Trying the open first spares two system calls per file once the folders exist."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o644)


if __name__ == "__main__":
    serve()
