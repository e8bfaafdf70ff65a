"""The store pipeline, the one path of every incoming instance (REST, C-STORE, STOW-RS):

    receive → (transcode) → store file (in the background) → parse → filter → index → events

The file is written (atomically) before the index transaction commits, and removed
if the instance is refused or that transaction fails: the index never names a file
that is not complete on disk. A crash in between leaves at most an unreferenced
file, never a dangling row.
"""

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

from .dicom.levels import Level
from .dicom.parse import ParsedInstance, parse_instance
from .dicom.tags import MAIN_DICOM_TAGS, format_tag
from .errors import IsengardError
from .events import Event, EventBus
from .index import ChangeType, Index, MetadataType, now_iso
from .index.index import NEW_RESOURCE_CHANGE, AddedInstance
from .storage import ContentType, StorageArea
from .storage.area import PendingFile

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Origin:
    """Where an instance came from, recorded in its metadata."""

    source: str = "Unknown"  # "RestApi", "DicomProtocol", "Lua", "Plugins"...
    remote_ip: str = ""
    remote_aet: str = ""
    called_aet: str = ""
    http_username: str = ""


class StoreStatus(str, Enum):
    SUCCESS = "Success"
    ALREADY_STORED = "AlreadyStored"
    FILTERED_OUT = "FilteredOut"


@dataclass
class StoreResult:
    status: StoreStatus
    public_ids: dict[Level, str]
    created: list[Level] = field(default_factory=list)


UNCOMPRESSED_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


@dataclass(frozen=True)
class IngestTranscoding:
    """The IngestTranscoding options; `transcode` rewrites a file in a transfer syntax (the image processes)."""

    target: str
    of_uncompressed: bool
    of_compressed: bool
    transcode: Callable[[bytes, str], bytes]

    def applies_to(self, syntax: str) -> bool:
        if syntax == self.target:
            return False
        return self.of_uncompressed if syntax in UNCOMPRESSED_SYNTAXES else self.of_compressed


# A filter returns False to refuse an instance (Lua's ReceivedInstanceFilter, Python hooks...).
InstanceFilter = Callable[[ParsedInstance, Origin], bool]


def main_tags_signature(level: Level) -> str:
    """Which main tags a resource was indexed with, so a later change of the list is noticed."""
    return ";".join(format_tag(tag) for tag in MAIN_DICOM_TAGS[level])


SIGNATURES = {level: {MetadataType.MAIN_DICOM_TAGS_SIGNATURE: main_tags_signature(level)} for level in Level}


# Instances up to this size are stored on the event loop's thread: handing them to a thread
# costs more than their ingest (measured: 278 instead of 193 instances/s for 9 KB CT slices).
# Larger ones go to a thread, never holding other requests for long.
INLINE_STORE_LIMIT = 256 * 1024
# Attempts of an index transaction that lost a race to create a resource (PostgreSQL, and
# several processes sharing an index).
INDEX_ATTEMPTS = 3


class IngestPipeline:
    def __init__(
        self, index: Index, storage: StorageArea, events: EventBus, overwrite: bool = False, default_encoding: str = "Latin1"
    ):
        self.default_encoding = default_encoding  # Orthanc's name of the charset of files that declare none
        self.index = index
        self.storage = storage
        self.events = events
        self.overwrite = overwrite
        self.filters: list[InstanceFilter] = []
        self.transcoding: IngestTranscoding | None = None

    def store(self, data: bytes, origin: Origin) -> StoreResult:
        """Store an instance, from any thread."""
        data = self._transcoded(data)
        # The file is written first, so that its fsync runs while the instance is parsed and
        # indexed; it is discarded if the instance is refused, or is not indexed for any reason.
        pending = self.storage.create_in_background(data, ContentType.DICOM)
        with _discarded_on_error(pending):
            instance = parse_instance(data, self.default_encoding)
            return self._filter_and_index(instance, origin, pending)

    async def store_async(self, data: bytes, origin: Origin) -> StoreResult:
        """As `store`, for the event loop. A small instance is parsed and indexed on its thread,
        which serves other requests while the file is being written; the instance goes to a thread
        if it is large, or if its index write would wait for another."""
        if len(data) > INLINE_STORE_LIMIT or self.transcoding is not None:
            return await asyncio.to_thread(self.store, data, origin)
        pending = self.storage.create_in_background(data, ContentType.DICOM)
        with _discarded_on_error(pending):
            instance = parse_instance(data, self.default_encoding)
            await pending.written()
            if self.index.writer_busy:
                return await asyncio.to_thread(self._filter_and_index, instance, origin, pending)
            return self._filter_and_index(instance, origin, pending)

    def _transcoded(self, data: bytes) -> bytes:
        """The file in IngestTranscoding's syntax where it applies; as received if it cannot be
        transcoded (as Orthanc: the instance is not lost for that)."""
        transcoding = self.transcoding
        if transcoding is None or not transcoding.applies_to(parse_instance(data, self.default_encoding).transfer_syntax):
            return data
        try:
            return transcoding.transcode(data, transcoding.target)
        except IsengardError as exc:
            log.warning("Instance stored as received, not transcoded to %s: %s", transcoding.target, exc.details)
            return data

    def _filter_and_index(self, instance: ParsedInstance, origin: Origin, pending: PendingFile) -> StoreResult:
        public_ids = instance.identifiers.public_ids()
        if not all(accept(instance, origin) for accept in self.filters):
            pending.discard()
            return StoreResult(StoreStatus.FILTERED_OUT, public_ids)
        for attempt in range(1, INDEX_ATTEMPTS + 1):
            try:
                added = self._index(instance, origin, pending, public_ids)
                break
            except self.index.conflict_errors:
                # Another writer created one of the instance's resources since we looked.
                if attempt == INDEX_ATTEMPTS:
                    raise
        if added.already_stored:
            pending.discard()
            return StoreResult(StoreStatus.ALREADY_STORED, public_ids)
        for replaced in added.replaced_files:
            self.storage.remove(replaced)
        self._publish(instance, origin, public_ids, added.created)
        return StoreResult(StoreStatus.SUCCESS, public_ids, added.created)

    def _index(self, instance: ParsedInstance, origin: Origin, pending: PendingFile, public_ids: dict[Level, str]) -> AddedInstance:
        if self.index.writer_busy:
            # Others are indexing (several associations): this file is waited for before taking
            # their turn, so that they do not wait for it too.
            pending.wait()
        with self.index.write() as index:
            added = index.add_instance(
                public_ids=public_ids,
                main_tags=instance.main_tags,
                files=[pending.info],
                instance_metadata=_instance_metadata(instance, origin),
                resource_metadata_values=_resource_metadata(instance),
                overwrite=self.overwrite,
            )
            if not added.already_stored:
                pending.wait()  # the file is complete on disk before the commit names it
        return added

    def _publish(self, instance: ParsedInstance, origin: Origin, public_ids: dict[Level, str], created: list[Level]) -> None:
        details = {"instance": instance, "origin": origin, "public_ids": public_ids}
        self.events.publish(Event(ChangeType.NEW_INSTANCE, Level.INSTANCE, public_ids[Level.INSTANCE], details))
        for level in (Level.SERIES, Level.STUDY, Level.PATIENT):
            if level in created:
                self.events.publish(Event(NEW_RESOURCE_CHANGE[level], level, public_ids[level], details))


@contextmanager
def _discarded_on_error(pending: PendingFile) -> Iterator[None]:
    try:
        yield
    except BaseException:
        pending.discard()
        raise


def _resource_metadata(instance: ParsedInstance) -> dict[Level, dict[int, str]]:
    """The metadata of the resources an instance creates: the series also records how many
    instances it announces (computed once, from its first instance, as Orthanc)."""
    expected = instance.expected_number_of_instances
    if expected is None:
        return SIGNATURES
    return {**SIGNATURES, Level.SERIES: {**SIGNATURES[Level.SERIES], MetadataType.EXPECTED_NUMBER_OF_INSTANCES: str(expected)}}


def _instance_metadata(instance: ParsedInstance, origin: Origin) -> dict[int, str]:
    """As Orthanc: the called AET is recorded for the DICOM protocol, the HTTP user for the REST API."""
    index_in_series = instance.index_in_series
    pixel_data_offset = instance.pixel_data_offset
    return {
        MetadataType.RECEPTION_DATE: now_iso(),
        MetadataType.ORIGIN: origin.source,
        MetadataType.REMOTE_AET: origin.remote_aet,
        MetadataType.REMOTE_IP: origin.remote_ip,
        **({MetadataType.CALLED_AET: origin.called_aet} if origin.source == "DicomProtocol" else {}),
        **({MetadataType.HTTP_USERNAME: origin.http_username} if origin.source == "RestApi" else {}),
        MetadataType.TRANSFER_SYNTAX: instance.transfer_syntax,
        **({MetadataType.SOP_CLASS_UID: instance.sop_class_uid} if instance.sop_class_uid is not None else {}),
        **({MetadataType.INDEX_IN_SERIES: index_in_series} if index_in_series is not None else {}),
        **({MetadataType.PIXEL_DATA_OFFSET: str(pixel_data_offset)} if pixel_data_offset is not None else {}),
    }
