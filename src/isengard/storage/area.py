"""A folder of attachment files, one file per UUID under `ab/cd/abcd...`.

Writes go to a temporary file that is renamed into place, so a reader never sees
a half-written file and a crash leaves at most an unreferenced temporary file,
swept at start-up. Compressed files use Orthanc's layout (the uncompressed size as
a little-endian uint64, then a zlib stream), so a storage area can move between
the two servers.
"""

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

log = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".tmp"


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


class PendingFile:
    """A file being written in the background: `wait()` before the index may name it."""

    def __init__(self, info: FileInfo, written: Future):
        self.info = info
        self._written = written

    def wait(self) -> FileInfo:
        self._written.result()
        return self.info

    def when_written(self, action: Callable[[], None]) -> None:
        """Run `action` once the write is over, unless it failed (and so left nothing)."""
        self._written.add_done_callback(lambda written: written.exception() is None and action())


class StorageArea:
    def __init__(self, root: Path, compress: bool = False, sync: bool = True):
        self.root = Path(root)
        self.compress = compress
        self.sync = sync
        self.root.mkdir(parents=True, exist_ok=True)
        self._writers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="storage-writer")

    def path(self, file_uuid: str) -> Path:
        return self.root / file_uuid[0:2] / file_uuid[2:4] / file_uuid

    def create(self, data: bytes, content_type: int, compress: bool | None = None) -> FileInfo:
        """Store `data` under a new UUID and describe it; atomic on a crash."""
        info, stored = self._describe(data, content_type, compress)
        self._write_atomically(self.path(info.uuid), stored)
        return info

    def create_in_background(self, data: bytes, content_type: int) -> PendingFile:
        """As `create`, but the write (and its fsync, milliseconds long) overlaps the caller's work."""
        info, stored = self._describe(data, content_type, None)
        return PendingFile(info, self._writers.submit(self._write_atomically, self.path(info.uuid), stored))

    def discard(self, pending: PendingFile) -> None:
        """Remove a file that will not be indexed, once its write is over (without waiting for it)."""
        pending.when_written(lambda: self.remove(pending.info.uuid))

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

    def _write_atomically(self, path: Path, data: bytes) -> None:
        temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as f:
                f.write(data)
                if self.sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            code = ErrorCode.FULL_STORAGE if exc.errno == 28 else ErrorCode.CANNOT_WRITE_FILE
            raise IsengardError(code, f"Cannot write {path}: {exc.strerror}") from exc


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
