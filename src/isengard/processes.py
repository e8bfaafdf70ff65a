"""Worker processes: programs that run beside the server on interpreters of their own, for work the
server keeps out of its process (images: numpy, Pillow and the codecs are most of a server's memory
at start, and a codec that crashes must not take the server down).

A pool starts its processes on demand, lends each to one caller at a time, and lets each stop after
`idle_exit` seconds without a request. The protocol, on a process's stdin and stdout: once set up,
the process writes READY; then a request and its answer are each a header (two lengths), a JSON
object and a payload of bytes.
"""

import logging
import queue
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .errors import ErrorCode, IsengardError
from .storage.writer import read_exactly, write_all
from .storage.writer_pool import close_process

log = logging.getLogger(__name__)

READY = b"R"
MESSAGE = struct.Struct("<II")  # lengths of the JSON object and of the payload
IDLE_EXIT = 60.0  # seconds
SOURCE_ROOT = str(Path(__file__).resolve().parent.parent)  # where a process imports isengard from

Message = tuple[dict[str, Any], bytes]
Handler = Callable[[dict[str, Any], bytes], Message]


class WorkerProcess:
    """A process running `module.main()`, used by one thread at a time (see WorkerPool)."""

    def __init__(self, module: str, idle_exit: float):
        program = f"import sys; sys.path.insert(0, {SOURCE_ROOT!r}); from {module} import main; main({idle_exit!r})"
        # In a session of its own, the process is not interrupted by the Ctrl+C meant for the
        # server, which stops it by closing its pipe.
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-c", program],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, start_new_session=True,
        )
        self._requests = self._process.stdin.fileno()  # type: ignore[union-attr]
        self._answers = self._process.stdout.fileno()  # type: ignore[union-attr]

    def ready(self) -> bool:
        """Wait until the process is set up; False if it failed."""
        return read_exactly(self._answers, len(READY)) == READY

    def call(self, request: dict[str, Any], payload: bytes = b"") -> Message | None:
        """The answer; None if the process stopped first (its idle time ran out, or it crashed)."""
        try:
            _send(self._requests, request, payload)
        except OSError:  # BrokenPipeError
            return None
        return _receive(self._answers)

    def close(self) -> None:
        close_process(self._process)


class WorkerPool:
    """Up to `size` processes of `module`, started when first needed."""

    def __init__(self, module: str, size: int, idle_exit: float = IDLE_EXIT):
        self._module = module
        self._size = size
        self._idle_exit = idle_exit
        self._idle: queue.LifoQueue[WorkerProcess] = queue.LifoQueue()  # the last used is the warmest
        self._count = 0  # processes running or starting
        self._lock = threading.Lock()
        self._closed = False

    def call(self, request: dict[str, Any], payload: bytes = b"") -> Message:
        """The answer of a process. A process that stops first (idle, or crashed on this request)
        is replaced, and the request tried once more."""
        for _attempt in range(2):
            process = self._borrow()
            answer = process.call(request, payload)
            self._give_back(process, alive=answer is not None)
            if answer is not None:
                return answer
        raise IsengardError(ErrorCode.INTERNAL_ERROR, f"The worker process stopped on this request ({self._module})")

    def close(self) -> None:
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _borrow(self) -> WorkerProcess:
        while True:
            try:
                return self._idle.get(timeout=0.1 if self._count else 0)
            except queue.Empty:
                pass
            with self._lock:
                if self._closed:
                    raise IsengardError(ErrorCode.INTERNAL_ERROR, "The server is stopping")
                start = self._count < self._size
                if start:
                    self._count += 1
            if start:
                return self._start()

    def _start(self) -> WorkerProcess:
        try:
            process = WorkerProcess(self._module, self._idle_exit)
            if process.ready():
                return process
            process.close()
        except OSError:
            pass
        with self._lock:
            self._count -= 1
        raise IsengardError(ErrorCode.INTERNAL_ERROR, f"A worker process failed to start ({self._module})")

    def _give_back(self, process: WorkerProcess, alive: bool) -> None:
        if alive and not self._closed:
            self._idle.put(process)
            return
        process.close()
        with self._lock:
            self._count -= 1


def serve(handle: Handler, idle_exit: float) -> None:
    """The loop of a worker process: answer requests with `handle` until the server closes the
    pipe, or none came for `idle_exit` seconds."""
    requests, answers = sys.stdin.fileno(), sys.stdout.fileno()
    write_all(answers, READY)
    while select.select([requests], [], [], idle_exit)[0]:
        message = _receive(requests)
        if message is None:
            return
        _send(answers, *handle(*message))


def _send(fd: int, header: dict[str, Any], payload: bytes) -> None:
    encoded = orjson.dumps(header)
    write_all(fd, MESSAGE.pack(len(encoded), len(payload)) + encoded)
    if payload:
        write_all(fd, payload)


def _receive(fd: int) -> Message | None:
    lengths = read_exactly(fd, MESSAGE.size)
    if lengths is None:
        return None
    header_size, payload_size = MESSAGE.unpack(lengths)
    header, payload = read_exactly(fd, header_size), read_exactly(fd, payload_size)
    if header is None or payload is None:
        return None
    return orjson.loads(header), payload
