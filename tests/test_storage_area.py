"""The storage area's writes: through writer processes, by the caller when they are all busy,
and what happens when a write fails or a writer dies."""

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from isengard.errors import ErrorCode, IsengardError
from isengard.storage import ContentType, StorageArea
from isengard.storage.area import WRITER_MAX_SIZE, WRITER_PROCESSES
from isengard.storage.writer import write_file

from conftest import child_pids


@pytest.fixture
def area(tmp_path):
    storage = StorageArea(tmp_path / "storage")
    yield storage
    storage.close()


def writer_pids() -> list[int]:
    """The writer processes started by this (test) process."""
    return [pid for pid in child_pids(os.getpid()) if b"writer.py" in _command_line(pid)]


def _command_line(pid: int) -> bytes:
    """A process's command line; Popen returns while the kernel may still be setting it up (empty)."""
    deadline = time.monotonic() + 2
    while not (command := Path(f"/proc/{pid}/cmdline").read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return command


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def assert_stored(area: StorageArea, data: bytes, info) -> None:
    assert area.path(info.uuid).read_bytes() == data
    assert info.uncompressed_md5 == hashlib.md5(data).hexdigest()
    assert area.read(info) == data


def test_background_writes_go_through_writer_processes_then_the_caller(area):
    blobs = [os.urandom(9000 + n) for n in range(WRITER_PROCESSES + 2)]
    pending = [area.create_in_background(blob, ContentType.DICOM) for blob in blobs]  # none waited for yet
    assert len(writer_pids()) == WRITER_PROCESSES  # the others were written by this thread
    for blob, file in zip(blobs, pending):
        assert_stored(area, blob, file.wait())
    assert not list(area.root.rglob("*.tmp"))

    # The writers are idle again, and reused.
    again = area.create_in_background(b"again", ContentType.DICOM)
    assert_stored(area, b"again", again.wait())
    assert len(writer_pids()) == WRITER_PROCESSES


def test_large_files_are_written_by_the_caller(area):
    blob = os.urandom(WRITER_MAX_SIZE + 1)
    assert_stored(area, blob, area.create_in_background(blob, ContentType.DICOM).wait())
    assert writer_pids() == []


def test_a_discarded_file_leaves_nothing(area):
    area.create_in_background(b"refused", ContentType.DICOM).discard()
    assert not [p for p in area.root.rglob("*") if p.is_file()]


def test_a_failed_write_is_an_error_and_leaves_no_file(area):
    root = area.root
    os.rename(root, root.with_name("elsewhere"))
    root.write_bytes(b"a file where the storage folder was")
    pending = area.create_in_background(b"data", ContentType.DICOM)
    with pytest.raises(IsengardError) as error:
        pending.wait()
    assert error.value.code == ErrorCode.CANNOT_WRITE_FILE
    assert len(writer_pids()) == 1  # the writer survived its failure


def test_dead_writers_are_replaced(area):
    area.create_in_background(b"first", ContentType.DICOM).wait()
    for pid in writer_pids():
        kill(pid)
    second = area.create_in_background(b"second", ContentType.DICOM)  # written by this thread
    assert_stored(area, b"second", second.wait())
    third = area.create_in_background(b"third", ContentType.DICOM)
    assert len(writer_pids()) == 1  # a new writer
    assert_stored(area, b"third", third.wait())


def test_a_writer_killed_during_a_write_loses_nothing_stored(area):
    """Whatever the moment of the kill: the file is complete in place, or the write is an error
    and nothing of it remains."""
    blob = os.urandom(WRITER_MAX_SIZE)
    for _ in range(5):
        pending = area.create_in_background(blob, ContentType.DICOM)
        for pid in writer_pids():
            kill(pid)
        try:
            info = pending.wait()
        except IsengardError as exc:
            assert exc.code == ErrorCode.CANNOT_WRITE_FILE
            assert not area.path(pending.info.uuid).exists()
        else:
            assert_stored(area, blob, info)
        assert not list(area.root.rglob("*.tmp"))


def test_close_stops_the_writers(tmp_path):
    area = StorageArea(tmp_path / "storage")
    area.create_in_background(b"data", ContentType.DICOM).wait()
    assert writer_pids()
    area.close()
    assert writer_pids() == []


def test_write_file_reports_the_errno(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    assert write_file(str(tmp_path / "file" / "sub" / "x"), b"data", sync=True) != 0
    assert write_file(str(tmp_path / "a" / "b" / "x"), b"data", sync=True) == 0
    assert (tmp_path / "a" / "b" / "x").read_bytes() == b"data"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_files_are_awaited_on_an_event_loop_which_goes_on(area, loop):
    """`written()` waits for writer processes and for the caller's fsync threads alike, without
    blocking the loop; the writers are then as usable from threads as before (uvloop leaves the
    pipe it watched non-blocking), and a failed write is still raised by `wait()`."""
    import asyncio
    import threading

    runner = pytest.importorskip("uvloop").run if loop == "uvloop" else asyncio.run
    blobs = [os.urandom(9000 + n) for n in range(WRITER_PROCESSES + 2)]

    async def write_all_while_ticking() -> tuple[list, int]:
        ticks = 0
        pending = [area.create_in_background(blob, ContentType.DICOM) for blob in blobs]
        waiting = asyncio.gather(*(file.written() for file in pending))
        while not waiting.done():
            ticks += 1
            await asyncio.sleep(0)
        await waiting
        return [file.wait() for file in pending], ticks

    infos, ticks = runner(write_all_while_ticking())
    assert ticks > 0
    for blob, info in zip(blobs, infos):
        assert_stored(area, blob, info)

    from_thread: list = []
    thread = threading.Thread(target=lambda: from_thread.append(area.create_in_background(b"then", ContentType.DICOM).wait()))
    thread.start()
    thread.join()
    assert_stored(area, b"then", from_thread[0])

    os.rename(area.root, area.root.with_name("elsewhere"))
    area.root.write_bytes(b"a file where the storage folder was")
    failing = area.create_in_background(b"data", ContentType.DICOM)
    runner(failing.written())
    with pytest.raises(IsengardError):
        failing.wait()
