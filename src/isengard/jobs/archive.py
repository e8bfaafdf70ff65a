"""The "Archive" job: a ZIP of DICOM files laid out as Orthanc's, PatientID PatientName /
AccessionNumber StudyDescription / Modality SeriesDescription / MR000000.dcm...

One step per instance, then one to close the ZIP. The archive goes to a temporary file (offered as the
job's output "archive", or answered once whole) or is streamed to the HTTP client as it is written.
"""

from __future__ import annotations

import logging
import os
import string
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

from pydicom.datadict import tag_for_keyword

from ..dicom.levels import Level
from ..errors import ErrorCode, IsengardError
from ..index import IndexTransaction, Resource
from ..storage import ContentType
from .job import Job, JobOutput, StopReason

if TYPE_CHECKING:
    from ..server import Isengard

log = logging.getLogger(__name__)

MB = 1024 * 1024
MEDIA_FILE_SET_ID = "ISENGARD_MEDIA"
# The attributes that the records of a DICOMDIR (patient, study, series, image) require of each
# instance (PS3.3 F.5), and the values a media file gets when it has none.
INVENTED_RECORD_VALUES = {"PatientID": "UNKNOWN", "StudyDate": "19000101", "StudyTime": "000000", "StudyID": "0",
                          "Modality": "OT", "SeriesNumber": "0", "InstanceNumber": "1"}
ZIP_COMMENT = b"Created by Isengard"

# The two main tags that name the folder of each level.
FOLDER_TAGS: dict[Level, tuple[int, int]] = {
    level: (tag_for_keyword(first), tag_for_keyword(second))  # type: ignore[misc]
    for level, (first, second) in {
        Level.PATIENT: ("PatientID", "PatientName"),
        Level.STUDY: ("AccessionNumber", "StudyDescription"),
        Level.SERIES: ("Modality", "SeriesDescription"),
    }.items()
}
MODALITY: int = tag_for_keyword("Modality")  # type: ignore[assignment]
KEPT_CHARACTERS = frozenset(string.ascii_letters + string.digits + "._ ")


def folder_name(level: Level, tags: dict[int, str]) -> str:
    """As Orthanc: '^' becomes a space, only ASCII letters, digits, '.', '_' and spaces remain, and spaces
    collapse; "Unknown Study" and the like when nothing remains."""
    text = " ".join(tags.get(tag, "") for tag in FOLDER_TAGS[level]).replace("^", " ")
    name = " ".join("".join(c for c in text if c in KEPT_CHARACTERS).split())
    return name or f"Unknown {level.title}"


def instance_file_name(modality: str, index: int) -> str:
    """MR000000.dcm: the first two letters of the modality then a counter, on eight characters in all."""
    prefix = modality[:2]
    return f"{prefix}{index:0{8 - len(prefix)}d}.dcm"


def unique_names(names: list[str]) -> list[str]:
    """Siblings of the same name become "name", "name-2", "name-3"..."""
    seen: Counter[str] = Counter()
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique


@dataclass(frozen=True)
class ArchiveEntry:
    path: str  # in the ZIP
    instance: str  # public ID
    size: int  # of the DICOM file


# patient -> study -> series -> instances (by internal ID, to keep the order of the index)
Tree = dict[Resource, dict[Resource, dict[Resource, dict[int, Resource]]]]


def plan_archive(index: IndexTransaction, public_ids: list[str]) -> list[ArchiveEntry]:
    """The files of an archive of resources of any level; unknown ones raise UnknownResource (404).
    As Orthanc, patients, studies and series come in the order of their public IDs, instances in
    the order of the index, and an instance asked for twice (itself and its series) is archived once."""
    tree: Tree = {}
    parents: dict[int, Resource] = {}

    def parent(resource: Resource) -> Resource:
        if resource.parent_id not in parents:
            parents[resource.parent_id] = index.resource(resource.parent_id)  # type: ignore[arg-type]
        return parents[resource.parent_id]  # type: ignore[index]

    for public_id in public_ids:
        for series, instances in _instances_by_series(index, index.get(public_id)).items():
            study = parent(series)
            branch = tree.setdefault(parent(study), {}).setdefault(study, {}).setdefault(series, {})
            branch.update((instance.internal_id, instance) for instance in instances)
    return _entries(index, tree)


def _instances_by_series(index: IndexTransaction, resource: Resource) -> dict[Resource, list[Resource]]:
    if resource.level is Level.INSTANCE:
        return {index.parent(resource): [resource]}  # type: ignore[dict-item]
    return {series: index.children(series) for series in index.descendants(resource, Level.SERIES)}


def _entries(index: IndexTransaction, tree: Tree) -> list[ArchiveEntry]:
    folders = [
        folder.internal_id
        for patient, studies in tree.items()
        for study, series in studies.items()
        for folder in (patient, study, *series)
    ]
    tags = index.main_tags_of(folders)
    instance_ids = [
        internal_id for studies in tree.values() for series in studies.values() for instances in series.values()
        for internal_id in instances
    ]
    sizes = {i: a.info.uncompressed_size for i, a in index.attachments_of(instance_ids, ContentType.DICOM).items()}
    entries = []
    for patient_name, patient in _named(Level.PATIENT, tree, tags):
        for study_name, study in _named(Level.STUDY, tree[patient], tags):
            for series_name, series in _named(Level.SERIES, tree[patient][study], tags):
                modality = tags[series.internal_id].get(MODALITY, "")
                instances = sorted(tree[patient][study][series].items())
                for number, (internal_id, instance) in enumerate(instances):
                    path = f"{patient_name}/{study_name}/{series_name}/{instance_file_name(modality, number)}"
                    entries.append(ArchiveEntry(path, instance.public_id, sizes.get(internal_id, 0)))
    return entries


def _named(level: Level, resources: Iterable[Resource], tags: dict[int, dict[int, str]]) -> list[tuple[str, Resource]]:
    ordered = sorted(resources, key=lambda r: r.public_id)
    names = unique_names([folder_name(level, tags[r.internal_id]) for r in ordered])
    return list(zip(names, ordered))


# -- where the archive goes ----------------------------------------------------------------------------


class ArchiveDestination(Protocol):
    persistent: bool  # whether the job can be saved and made again after a restart
    size: int  # of the whole archive, once complete

    def open(self) -> IO[bytes]: ...

    def complete(self) -> None: ...  # the archive is whole

    def discard(self) -> None: ...  # the archive will not be whole

    def outputs(self) -> dict[str, JobOutput]: ...


def temporary_directory(isengard: Isengard) -> Path:
    """TemporaryDirectory, or the system's."""
    return isengard.config.temporary_directory or Path(tempfile.gettempdir())


class ArchiveFile:
    """A temporary file: the job's output "archive" when `offered` (asynchronous requests), else the
    answer to a synchronous request, sent once whole (SynchronousZipStream false)."""

    def __init__(self, directory: Path, offered: bool):
        self.directory = directory
        self.persistent = offered
        self.path: Path | None = None
        self.size = 0
        self._file: IO[bytes] | None = None

    def open(self) -> IO[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix="isengard-archive-", suffix=".zip", dir=self.directory)
        self.path, self._file = Path(name), os.fdopen(descriptor, "wb")
        return self._file

    def complete(self) -> None:
        if self._file is not None and not self._file.closed:
            self.size = self._file.tell()
            self._file.close()

    def discard(self) -> None:
        self.complete()
        self.size = 0
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def outputs(self) -> dict[str, JobOutput]:
        if not self.persistent or self.path is None:
            return {}
        return {"archive": JobOutput(self.path, "application/zip", "archive.zip")}


class IncompleteArchive(Exception):
    """The job that wrote a streamed archive failed or was canceled before its end."""


class ArchiveStream:
    """The archive on its way to an HTTP client as the job writes it (SynchronousZipStream): the job
    waits while `capacity` bytes are not yet sent, and fails once the client has gone away."""

    persistent = False

    def __init__(self, capacity: int = MB):
        self.capacity = capacity
        self._ready = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self.size = 0
        self._ended = False  # the job will write no more...
        self._whole = False  # ...and the archive is whole
        self._abandoned = False  # the client has gone away

    def open(self) -> IO[bytes]:
        return self  # type: ignore[return-value] - write() and flush() are all ZipFile needs

    def write(self, data: bytes) -> int:
        if not data:  # ZipFile writes empty flushes; an empty read means the end
            return 0
        with self._ready:
            self._ready.wait_for(lambda: self._buffered < self.capacity or self._abandoned or self._ended)
            if self._abandoned:
                raise IsengardError(ErrorCode.NETWORK_PROTOCOL, "The HTTP client has gone away")
            if self._ended:
                raise ValueError("The archive has been discarded")
            self._chunks.append(bytes(data))
            self._buffered += len(data)
            self.size += len(data)
            self._ready.notify_all()
        return len(data)

    def flush(self) -> None:
        pass

    def complete(self) -> None:
        self._end(whole=True)

    def discard(self) -> None:
        self._end(whole=False)

    def _end(self, whole: bool) -> None:
        with self._ready:
            self._ended, self._whole = True, whole
            self._ready.notify_all()

    def outputs(self) -> dict[str, JobOutput]:
        return {}

    def read(self) -> bytes:
        """The bytes written since the last read (waiting for some); b"" at the end of a whole archive,
        IncompleteArchive at the end of one whose job failed."""
        with self._ready:
            self._ready.wait_for(lambda: self._chunks or self._ended)
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                self._ready.notify_all()
                return data
            if not self._whole:
                raise IncompleteArchive()
            return b""

    def abandon(self) -> None:
        """The client has gone away: the job's next write fails."""
        with self._ready:
            self._abandoned = True
            self._ready.notify_all()


# -- the job -------------------------------------------------------------------------------------------


def _write_member(archive: ZipFile, path: str, data: bytes) -> None:
    member = ZipInfo(path, time.localtime()[:6])
    member.compress_type = ZIP_DEFLATED
    archive.writestr(member, data)


class ArchiveJob(Job):
    type_name = "Archive"

    def __init__(
        self,
        isengard: Isengard,
        resources: list[str],
        destination: ArchiveDestination,
        entries: list[ArchiveEntry] | None,
        description: str = "REST API",
        totals: dict[str, int] | None = None,
        transcode: str | None = None,
    ):
        """`entries` from plan_archive; None to plan when the job starts (a job restored after a restart,
        which shows the `totals` it had until then). `transcode`: the transfer syntax of the files
        in the archive (those that cannot be transcoded go as they are stored)."""
        self._isengard = isengard
        self.transcode = transcode
        self.resources = resources
        self.destination = destination
        self.description = description
        totals = totals or {}
        self._entries: list[ArchiveEntry] | None = None
        self._instances_count = totals.get("InstancesCount", 0)
        self._uncompressed_size = totals.get("UncompressedSize", 0)
        self._archive_size = totals.get("ArchiveSize", 0)
        if entries is not None:
            self._follow(entries)
        self._zip: ZipFile | None = None
        self._position = 0

    def _follow(self, entries: list[ArchiveEntry]) -> None:
        self._entries = entries
        self._instances_count = len(entries)
        self._uncompressed_size = sum(entry.size for entry in entries)

    def start(self) -> None:
        if self._entries is None:
            with self._isengard.index.read() as index:
                self._follow(plan_archive(index, self.resources))
        if self._zip is None:  # else resumed after a pause
            self._zip = ZipFile(self.destination.open(), "w", ZIP_DEFLATED)
            self._zip.comment = ZIP_COMMENT

    def step(self) -> bool:
        assert self._entries is not None and self._zip is not None
        if self._position < len(self._entries):
            entry = self._entries[self._position]
            self._add(entry, self._file(entry.instance))
            self._archive_size = self._zip.start_dir  # what is written so far
            self._position += 1
            return False
        self._finish(self._zip)
        self._zip.close()
        self.destination.complete()
        self._archive_size = self.destination.size
        self._position += 1
        return True

    def _add(self, entry: ArchiveEntry, data: bytes) -> None:
        _write_member(self._zip, entry.path, data)  # type: ignore[arg-type]

    def _finish(self, archive: ZipFile) -> None:
        """What goes into the ZIP once every instance is in (nothing, but for media)."""

    def _file(self, instance: str) -> bytes:
        data = self._isengard.read_dicom(instance)
        if self.transcode is None:
            return data
        try:
            return self._isengard.images.transcode(data, self.transcode)
        except IsengardError as exc:
            log.warning("Instance %s archived as stored, not transcoded to %s: %s", instance, self.transcode, exc.details)
            return data

    @property
    def progress(self) -> float:
        return self._position / (len(self._entries) + 1) if self._entries is not None else 0.0

    def stop(self, reason: StopReason) -> None:
        if reason in (StopReason.FAILURE, StopReason.CANCELED):
            self._throw_away()

    def _throw_away(self) -> None:
        self.destination.discard()  # first, so that closing the ZIP cannot end it well
        if self._zip is not None:
            try:
                self._zip.close()
            except (OSError, ValueError, IsengardError):
                pass  # its destination is gone already
            self._zip = None
        self._archive_size = 0

    def reset(self) -> None:
        raise IsengardError(ErrorCode.BAD_SEQUENCE_OF_CALLS, "Cannot resubmit the creation of an archive", 500)

    def content(self) -> dict[str, Any]:
        return {
            "ArchiveSize": str(self._archive_size),
            "ArchiveSizeMB": self._archive_size // MB,
            "Description": self.description,
            "InstancesCount": self._instances_count,
            "UncompressedSize": str(self._uncompressed_size),
            "UncompressedSizeMB": self._uncompressed_size // MB,
        }

    def outputs(self) -> dict[str, JobOutput]:
        return self.destination.outputs()

    def serialize(self) -> dict[str, Any] | None:
        """Asynchronous archives only (Isengard's choice: Orthanc saves no archive job); the ZIP is made
        again if the job had not finished, its file is not kept across a restart."""
        if not self.destination.persistent:
            return None
        return {
            "ArchiveSize": self._archive_size,
            "Description": self.description,
            "InstancesCount": self._instances_count,
            "Resources": self.resources,
            "Transcode": self.transcode,
            "UncompressedSize": self._uncompressed_size,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], isengard: Isengard) -> ArchiveJob:
        destination = ArchiveFile(temporary_directory(isengard), offered=True)
        return cls(isengard, list(data["Resources"]), destination, None, data.get("Description", ""), data,
                   data.get("Transcode"))


class MediaJob(ArchiveJob):
    """A ZIP with a DICOMDIR (PS3.10 media): the instances go into a file-set staged in a temporary
    folder (pydicom's FileSet names them PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn), which is written
    out, DICOMDIR included, into the ZIP at the end. Memory stays flat: the files wait on disk."""

    type_name = "Media"
    _staging: tempfile.TemporaryDirectory | None = None  # while the job runs
    _file_set: Any = None

    def start(self) -> None:
        super().start()
        if self._staging is None:
            from pydicom.fileset import FileSet

            self._staging = tempfile.TemporaryDirectory(dir=temporary_directory(self._isengard))
            self._file_set = FileSet()
            self._file_set.ID = MEDIA_FILE_SET_ID

    def _add(self, entry: ArchiveEntry, data: bytes) -> None:
        assert self._staging is not None
        from pydicom import dcmread

        path = Path(self._staging.name) / "in" / f"{self._position}.dcm"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        header = dcmread(path, stop_before_pixels=True, force=True)
        missing = [keyword for keyword in INVENTED_RECORD_VALUES if not header.get(keyword)]
        if missing:  # the DICOMDIR's records need them: this copy gets them, as `dcmmkdir --invent` does
            dataset = dcmread(path, force=True)
            for keyword in missing:
                setattr(dataset, keyword, INVENTED_RECORD_VALUES[keyword])
            dataset.save_as(path, enforce_file_format=True)
        self._file_set.add(str(path))

    def _finish(self, archive: ZipFile) -> None:
        assert self._staging is not None
        out = Path(self._staging.name) / "out"
        self._file_set.write(str(out))
        for path in sorted(out.rglob("*")):
            if path.is_file() and path.name != "DICOMDIR":
                _write_member(archive, path.relative_to(out).as_posix(), path.read_bytes())
        _write_member(archive, "DICOMDIR", (out / "DICOMDIR").read_bytes())  # last, as Orthanc
        self._staging.cleanup()
        self._staging = None

    def stop(self, reason: StopReason) -> None:
        super().stop(reason)
        if reason in (StopReason.FAILURE, StopReason.CANCELED) and self._staging is not None:
            self._staging.cleanup()
            self._staging = None
