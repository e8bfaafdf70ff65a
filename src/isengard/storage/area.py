"""A folder of attachment files, one file per UUID under `ab/cd/abcd...`.

Writes go to a temporary file that is renamed into place, so a reader never sees
a half-written file and a crash leaves at most an unreferenced temporary file,
swept at start-up. Compressed files use Orthanc's layout (the uncompressed size as
a little-endian uint64, then a zlib stream), so a storage area can move between
the two servers.
"""

import asyncio
import errno
import hashlib
import logging
import os
import struct
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from ..errors import ErrorCode, IsengardError
from .writer import STOPPED, create_file, write_all
from .writer_pool import WriterPool, WriterProcess

log = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".tmp"
# Writer processes (see writer_pool.py): one per core serves the concurrent ingests of a small server;
# beyond them, and for files whose copy through a pipe would cost more than it spares, the
# caller writes the file and a thread syncs it.
WRITER_PROCESSES = 2
WRITER_MAX_SIZE = 1 << 20


class ContentType(IntEnum):
    """Attachment types, numbered as Orthanc's FileContentType; user types are 1024-65535."""

    DICOM = 1
    DICOM_AS_JSON = 2
    DICOM_UNTIL_PIXEL_DATA = 3
    START_USER = 1024
    END_USER = 65535


class CompressionType(IntEnum):
    NONE = 1
    ZLIB_WITH_SIZE = 2


@dataclass(frozen=True)
class FileInfo:
    """What the index records of one stored attachment."""

    uuid: str
    content_type: int
    uncompressed_size: int
    uncompressed_md5: str
    compressed_size: int
    compressed_md5: str
    compression: CompressionType = CompressionType.NONE


class _WriterTicket:
    """The end of a write handed to a writer process, with the two methods of a Future that
    PendingFile uses. Only the thread that handed the write over calls them."""

    def __init__(self, pool: WriterPool, writer: WriterProcess):
        self._pool = pool
        self._writer = writer
        self._errno: int | None = None

    def result(self) -> None:
        if self._errno is None:
            self._errno = self._writer.answer()
            self._pool.give_back(self._writer, alive=self._errno != STOPPED)
        if self._errno == STOPPED:
            raise OSError(errno.EIO, "the storage writer process stopped")
        if self._errno:
            raise OSError(self._errno, os.strerror(self._errno))

    async def answered(self) -> None:
        """Wait, on the event loop, until the writer's answer is there to read."""
        if self._errno is not None:
            return
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        answers = self._writer.answers
        loop.add_reader(answers, lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(answers)
            os.set_blocking(answers, True)  # uvloop made it non-blocking; the writer's next user may be a thread

    def add_done_callback(self, callback: Callable[["_WriterTicket"], object]) -> None:
        try:
            self.result()
        except OSError:
            pass
        callback(self)


class PendingFile:
    """A file written under a temporary name, whose write or fsync may still be running in the
    background. `wait()` puts it in place once it is on disk: only then may the index name it."""

    def __init__(self, info: FileInfo, path: Path, synced: Future | _WriterTicket | None):
        self.info = info
        self._path = path
        self._temporary = _temporary(path)
        self._synced = synced
        self._placed = False

    def wait(self) -> FileInfo:
        if not self._placed:
            try:
                if self._synced is not None:
                    self._synced.result()
                os.replace(self._temporary, self._path)
            except OSError as exc:
                _remove_quietly(self._temporary)
                raise _write_error(self._path, exc) from exc
            self._placed = True
        return self.info

    async def written(self) -> None:
        """Wait, on the event loop, until the file is on disk (`wait()` then only puts it in
        place, and raises the error of the write, if any)."""
        if isinstance(self._synced, _WriterTicket):
            await self._synced.answered()
        elif self._synced is not None:
            await asyncio.wait([asyncio.wrap_future(self._synced)])

    def discard(self) -> None:
        """Forget the file: it will not be indexed. Does not wait for a running fsync; a write
        handed to a writer process is waited for, since the writer would create the file after."""
        if self._placed:
            _remove_quietly(self._path)
        elif self._synced is None:
            _remove_quietly(self._temporary)
        else:
            self._synced.add_done_callback(lambda _: _remove_quietly(self._temporary))


class StorageArea:
    def __init__(self, root: Path, compress: bool = False, sync: bool = True):
        self.root = Path(root)
        self.compress = compress
        self.sync = sync
        self.root.mkdir(parents=True, exist_ok=True)
        self._writer_processes = WriterPool(WRITER_PROCESSES)
        self._syncs = ThreadPoolExecutor(max_workers=8, thread_name_prefix="storage-sync")

    def path(self, file_uuid: str) -> Path:
        return self.root / file_uuid[0:2] / file_uuid[2:4] / file_uuid

    def create(self, data: bytes, content_type: int, compress: bool | None = None) -> FileInfo:
        """Store `data` under a new UUID and describe it; atomic on a crash."""
        info, stored = self._describe(data, content_type, compress)
        return self._write(info, stored, background=False).wait()

    def create_in_background(self, data: bytes, content_type: int) -> PendingFile:
        """As `create`, but the write, or at least its fsync (the slow part), runs while the caller goes on."""
        info, stored = self._describe(data, content_type, None)
        if len(stored) <= WRITER_MAX_SIZE and (writer := self._writer_processes.borrow()) is not None:
            path = self.path(info.uuid)
            if writer.send(str(_temporary(path)), stored, self.sync):
                return PendingFile(info, path, _WriterTicket(self._writer_processes, writer))
            self._writer_processes.give_back(writer, alive=False)
        return self._write(info, stored, background=True)

    def close(self) -> None:
        """Stop the writer processes and threads (pending files must have been waited for)."""
        self._writer_processes.close()
        self._syncs.shutdown()

    def _write(self, info: FileInfo, stored: bytes, background: bool) -> PendingFile:
        """Write under a temporary name. Only the fsync goes to a worker thread: a thread doing
        more (Python code between system calls) waits for the GIL behind the caller's work."""
        path = self.path(info.uuid)
        try:
            fd = create_file(str(_temporary(path)))
        except OSError as exc:
            raise _write_error(path, exc) from exc
        try:
            write_all(fd, stored)
        except OSError as exc:
            os.close(fd)
            _remove_quietly(_temporary(path))
            raise _write_error(path, exc) from exc
        if not self.sync:
            os.close(fd)
            return PendingFile(info, path, None)
        if background:
            return PendingFile(info, path, self._syncs.submit(_sync_and_close, fd))
        synced: Future = Future()
        try:
            _sync_and_close(fd)
            synced.set_result(None)
        except OSError as exc:
            synced.set_exception(exc)
        return PendingFile(info, path, synced)

    def _describe(self, data: bytes, content_type: int, compress: bool | None) -> tuple[FileInfo, bytes]:
        compress = self.compress if compress is None else compress
        stored = compress_data(data) if compress else data
        uncompressed_md5 = hashlib.md5(data).hexdigest()
        info = FileInfo(
            uuid=str(uuid.uuid4()),
            content_type=int(content_type),
            uncompressed_size=len(data),
            uncompressed_md5=uncompressed_md5,
            compressed_size=len(stored),
            compressed_md5=hashlib.md5(stored).hexdigest() if compress else uncompressed_md5,
            compression=CompressionType.ZLIB_WITH_SIZE if compress else CompressionType.NONE,
        )
        return info, stored

    def read(self, info: FileInfo) -> bytes:
        """The attachment as it was given to `create`."""
        stored = self.read_stored(info)
        if info.compression == CompressionType.ZLIB_WITH_SIZE:
            return decompress_data(stored)
        return stored

    def read_stored(self, info: FileInfo) -> bytes:
        """The attachment as it lies on disk (compressed if it was stored compressed)."""
        try:
            return self.path(info.uuid).read_bytes()
        except FileNotFoundError:
            raise IsengardError(ErrorCode.INEXISTENT_FILE, f"Missing file in the storage area: {info.uuid}") from None

    def read_range(self, info: FileInfo, end: int) -> bytes:
        """The first `end` bytes of the attachment, without reading the rest when possible."""
        if info.compression != CompressionType.NONE:
            return self.read(info)[:end]
        try:
            with open(self.path(info.uuid), "rb") as f:
                return f.read(end)
        except FileNotFoundError:
            raise IsengardError(ErrorCode.INEXISTENT_FILE, f"Missing file in the storage area: {info.uuid}") from None

    def remove(self, file_uuid: str) -> None:
        try:
            self.path(file_uuid).unlink()
        except FileNotFoundError:
            log.warning("File already gone from the storage area: %s", file_uuid)

    def sweep_temporary_files(self) -> int:
        """Remove what interrupted writes left behind; returns how many files went."""
        count = 0
        for path in self.root.glob(f"??/??/*{TEMPORARY_SUFFIX}"):
            path.unlink(missing_ok=True)
            count += 1
        return count


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + TEMPORARY_SUFFIX)


def _remove_quietly(path: Path) -> None:
    """Clean up after a failed or refused write, which must not hide its cause."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("Cannot remove %s: %s", path, exc.strerror)


def _sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(path: Path, exc: OSError) -> IsengardError:
    code = ErrorCode.FULL_STORAGE if exc.errno == 28 else ErrorCode.CANNOT_WRITE_FILE
    return IsengardError(code, f"Cannot write {path}: {exc.strerror}")


def compress_data(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + zlib.compress(data)


def decompress_data(stored: bytes) -> bytes:
    if len(stored) < 8:
        raise IsengardError(ErrorCode.CORRUPTED_FILE, "Compressed attachment without its size header")
    (size,) = struct.unpack("<Q", stored[:8])
    data = zlib.decompress(stored[8:]) if size else b""
    if len(data) != size:
        raise IsengardError(ErrorCode.CORRUPTED_FILE, "Compressed attachment of unexpected size")
    return data
