"""The program of a writer process (see writer_pool.py), run as a script: `python -I -S
writer.py`. It imports only a few modules of the standard library, so that each writer takes
less than 9 MiB.

The protocol, over the writer's stdin and stdout: a request is a header (flags, path length,
data length), the path in UTF-8 and the data; the answer is the errno of the write (0 when the
file is complete, and synced if asked, under that path).
"""

import os
import struct

REQUEST = struct.Struct("<BII")
ANSWER = struct.Struct("<i")
SYNC = 1
STOPPED = -1  # errno of the answer when the writer is gone


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_exactly(fd: int, size: int) -> bytes | None:
    """`size` bytes, or None at the end of the stream."""
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serve(requests: int = 0, answers: int = 1) -> None:
    """Write files until the server closes the pipe."""
    while (header := read_exactly(requests, REQUEST.size)) is not None:
        flags, path_size, data_size = REQUEST.unpack(header)
        path, data = read_exactly(requests, path_size), read_exactly(requests, data_size)
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
