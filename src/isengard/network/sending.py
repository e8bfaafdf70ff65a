"""Sending stored instances to remote DICOM nodes (C-STORE SCU): the core of /modalities/{id}/store,
of the C-MOVE and C-GET servers, and of the jobs that will send.

An instance goes as it is stored: the bytes of its dataset follow the C-STORE command without being
decoded. For each (SOP class, transfer syntax) of the instances to send, one presentation context
per transfer syntax is proposed: the file's own, and for an uncompressed file the little endian
syntaxes too (the dataset is then re-encoded if the peer accepts only another one). Compressed files
whose syntax the peer refuses fail: transcoding them is left to a later change. Instances are read
from storage one at a time, as they are sent.
"""

import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple, Protocol

import pydicom
from pydicom.uid import UID
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification
from pynetdicom.status import code_to_category

from ..dicom.levels import Level
from ..dicom.tags import SOP_INSTANCE_UID
from ..errors import ErrorCode, IsengardError
from ..index import MetadataType
from ..storage import ContentType
from ..storage.area import FileInfo
from .commands import pdata_pdus, store_request, store_response_status
from .modalities import Modality
from .pdus import PDataReceiver, pdv_items, pdv_value, send
from .presentation import EXPLICIT_BIG_ENDIAN, EXPLICIT_LITTLE_ENDIAN, IMPLICIT_LITTLE_ENDIAN
from .scu import MAX_AET_LENGTH, NetworkError, NoPresentationContext, ScuSettings, associate

if TYPE_CHECKING:
    from ..server import Isengard

log = logging.getLogger(__name__)

DEFLATED = "1.2.840.10008.1.2.1.99"
UNCOMPRESSED = frozenset({IMPLICIT_LITTLE_ENDIAN, EXPLICIT_LITTLE_ENDIAN, EXPLICIT_BIG_ENDIAN})
FALLBACK_SYNTAXES = (EXPLICIT_LITTLE_ENDIAN, IMPLICIT_LITTLE_ENDIAN)  # for uncompressed files
# An association has at most 128 presentation contexts (odd IDs 1 to 255), one of them Verification.
MAX_CONTEXTS = 127
ABORT_POLL = 0.05  # seconds between checks for an abort while waiting for a response
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


@dataclass(frozen=True)
class StoredInstance:
    """What sending an instance needs to know before reading its file."""

    public_id: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    file: FileInfo | None  # None: the instance has no DICOM file (anymore)


class MoveOriginator(NamedTuple):
    """The C-MOVE on whose behalf instances are sent (PS3.7 9.1.1.1.11-12)."""

    aet: str
    message_id: int


@dataclass
class SubOperations:
    """The outcome of the C-STOREs of a transfer so far, as C-MOVE and C-GET count them."""

    total: int
    completed: int = 0
    warning: int = 0
    failed: int = 0
    failed_instances: list[str] = field(default_factory=list)  # their SOP Instance UIDs
    missing: int = 0  # instances whose file could not be read (deleted meanwhile), among the failed

    def record(self, status: int) -> str:
        """Count a C-STORE that got an answer; the category of its status."""
        category = code_to_category(status)
        if category == "Success":
            self.completed += 1
        elif category == "Warning":
            self.warning += 1
        else:
            self.failed += 1
        return category

    def record_failure(self, instance: StoredInstance, missing: bool = False) -> None:
        self.failed += 1
        self.missing += missing
        self.failed_instances.append(instance.sop_instance_uid)


class StoreFailure(NetworkError):
    """One instance could not be sent; the others may still be."""


class MissingInstance(IsengardError):
    """The file of an instance to send cannot be read anymore."""


# -- the instances of resources ------------------------------------------------------------------


def stored_instances(isengard: "Isengard", public_ids: Iterable[str]) -> list[StoredInstance]:
    """The instances of resources of any level, resource after resource; an unknown resource
    raises UnknownResource (without details, as Orthanc)."""
    with isengard.index.read() as index:
        found = []
        for public_id in public_ids:
            resource = index.lookup(public_id)
            if resource is None:
                raise IsengardError(ErrorCode.UNKNOWN_RESOURCE)
            found += index.descendants(resource, Level.INSTANCE)
        ids = [instance.internal_id for instance in found]
        syntaxes = index.metadata_values(ids, MetadataType.TRANSFER_SYNTAX)
        sop_classes = index.metadata_values(ids, MetadataType.SOP_CLASS_UID)
        tags = index.main_tags_of(ids)
        files = index.attachments_of(ids, ContentType.DICOM)
    return [
        StoredInstance(
            public_id=instance.public_id,
            sop_class_uid=sop_classes.get(instance.internal_id, ""),
            sop_instance_uid=tags.get(instance.internal_id, {}).get(SOP_INSTANCE_UID, ""),
            transfer_syntax_uid=syntaxes.get(instance.internal_id, ""),
            file=files[instance.internal_id].info if instance.internal_id in files else None,
        )
        for instance in found
    ]


class Reader(Protocol):
    def __call__(self, instance: StoredInstance) -> bytes:
        """The stored file of an instance; MissingInstance if it is gone."""

    def transcode(self, data: bytes, transfer_syntax: str) -> bytes:
        """A file in another transfer syntax, for a peer that does not accept its own."""


class StorageReader:
    """The instances' files in the storage area; compressed ones are decompressed by the image
    processes (uncompressed ones are re-encoded here, see `reencoded`)."""

    def __init__(self, isengard: "Isengard", on_missing: Callable[[StoredInstance], None] = lambda _instance: None):
        self._isengard = isengard
        self._on_missing = on_missing

    def __call__(self, instance: StoredInstance) -> bytes:
        try:
            if instance.file is None:
                raise MissingInstance(ErrorCode.INEXISTENT_FILE, f"No DICOM file for instance {instance.public_id}")
            try:
                return self._isengard.storage.read(instance.file)
            except (OSError, IsengardError) as exc:
                raise MissingInstance(ErrorCode.INEXISTENT_FILE, f"Cannot read instance {instance.public_id}: {exc}") from None
        except MissingInstance:
            self._on_missing(instance)
            raise

    def transcode(self, data: bytes, transfer_syntax: str) -> bytes:
        return self._isengard.images.transcode(data, transfer_syntax)


def storage_reader(isengard: "Isengard") -> Reader:
    return StorageReader(isengard)


# -- presentation contexts -----------------------------------------------------------------------


def candidate_syntaxes(transfer_syntax: str) -> tuple[str, ...]:
    """The transfer syntaxes in which an instance can be sent, its own first: an instance goes
    uncompressed to a peer that does not accept its syntax, as with Orthanc."""
    return (transfer_syntax, *(syntax for syntax in FALLBACK_SYNTAXES if syntax != transfer_syntax))


def _pairs(instance: StoredInstance) -> list[tuple[str, str]]:
    return [(instance.sop_class_uid, syntax) for syntax in candidate_syntaxes(instance.transfer_syntax_uid)]


def proposed_contexts(instances: Iterable[StoredInstance]) -> list[PresentationContext]:
    """One context per (SOP class, transfer syntax) the instances may be sent in (the first
    MAX_CONTEXTS), and Verification: a peer that refuses all the others still accepts the
    association, and each instance then fails for want of a context, as with Orthanc. New objects
    each time: pynetdicom numbers the contexts of an association in them."""
    pairs = list(dict.fromkeys(pair for instance in instances for pair in _pairs(instance)))[:MAX_CONTEXTS]
    return [build_context(sop_class, syntax) for sop_class, syntax in pairs] + [build_context(Verification)]


def association_batches(instances: Sequence[StoredInstance]) -> list[list[StoredInstance]]:
    """The instances in groups that need at most MAX_CONTEXTS contexts each, one association per
    group; a single group unless the instances mix many SOP classes and syntaxes."""
    batches: list[tuple[set[tuple[str, str]], list[StoredInstance]]] = []
    for instance in instances:
        pairs = set(_pairs(instance))
        batch = next((b for b in batches if len(b[0] | pairs) <= MAX_CONTEXTS), None)
        if batch is None:
            batch = (set(), [])
            batches.append(batch)
        batch[0].update(pairs)
        batch[1].append(instance)
    return [members for _pairs_of_batch, members in batches]


def no_context_message(instance: StoredInstance, peer: str) -> str:
    return (
        f"No valid presentation context was negotiated for SOP class UID [{instance.sop_class_uid}] and "
        f"transfer syntax [{instance.transfer_syntax_uid}] while sending to modality [{peer}]"
    )


# -- the datasets --------------------------------------------------------------------------------


def dataset_start(data: bytes) -> int:
    """Where the dataset starts in a DICOM file: after the preamble and file meta group, whose
    elements are walked (their group length is wrong in some files); 0 in a bare dataset."""
    if data[128:132] != b"DICM":
        return 0
    offset = 132
    while data[offset : offset + 2] == b"\x02\x00":  # group 0002, explicit VR little endian
        if data[offset + 4 : offset + 6] in LONG_LENGTH_VRS:
            offset += 12 + int.from_bytes(data[offset + 8 : offset + 12], "little")
        else:
            offset += 8 + int.from_bytes(data[offset + 6 : offset + 8], "little")
    return offset


def reencoded(data: bytes, transfer_syntax: str) -> bytes:
    """The dataset of an uncompressed file in another uncompressed transfer syntax."""
    dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    syntax = UID(transfer_syntax)
    encoded = encode(dataset, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if encoded is None:
        raise ValueError(f"pydicom cannot encode the dataset in {transfer_syntax}")
    return encoded


# -- sending over an association -----------------------------------------------------------------


class InstanceSender:
    """C-STOREs of stored instances over one established association, counted as sub-operations.

    The requests are made and exchanged here rather than by `Association.send_c_store`, which
    takes a pydicom Dataset and encodes it: that would decode each file only to encode it again.
    """

    def __init__(
        self,
        assoc: Association,
        read: Reader,
        peer: str,
        counts: SubOperations,
        originator: MoveOriginator | None = None,
    ):
        self.assoc = assoc
        self.read = read
        self.peer = peer  # as error messages name it: the AET of the modality
        self.counts = counts
        self.originator = originator._replace(aet=originator.aet[:MAX_AET_LENGTH]) if originator else None
        self.broken = False  # no answer came: the association is ending, even if pynetdicom does not tell yet
        self._message_id = 0
        self._paused = False
        self._contexts = {
            (cx.abstract_syntax, cx.transfer_syntax[0]): cx.context_id for cx in assoc.accepted_contexts if cx.as_scu
        }
        self._next_receiver: PDataReceiver | None = getattr(assoc, "pdata_receiver", None)
        assoc.pdata_receiver = self

    def close(self) -> None:
        """Give the association back its own reading of the PDUs it receives."""
        self.assoc.pdata_receiver = self._next_receiver

    def send(self, instance: StoredInstance, message_id: int | None = None) -> int:
        """Send an instance and count the outcome; its status if it succeeded (possibly with a
        warning), else StoreFailure (or MissingInstance) saying why."""
        try:
            status = self._send(instance, message_id)
        except IsengardError as exc:
            self.counts.record_failure(instance, missing=isinstance(exc, MissingInstance))
            raise
        if self.counts.record(status) not in ("Success", "Warning"):
            self.counts.failed_instances.append(instance.sop_instance_uid)
            raise StoreFailure(f'C-STORE SCU to AET "{self.peer}" has failed with DIMSE status 0x{status:04X}')
        return status

    @property
    def usable(self) -> bool:
        return self.assoc.is_established and not self.broken

    def _send(self, instance: StoredInstance, message_id: int | None) -> int:
        if not self.usable:
            raise StoreFailure(f'The association with AET "{self.peer}" has ended')
        context_id, syntax = self._context(instance)
        dataset = self._dataset(instance, syntax)
        if message_id is None:
            self._message_id = self._message_id % 0xFFFF + 1
            message_id = self._message_id
        command = store_request(instance.sop_class_uid, instance.sop_instance_uid, message_id, self.originator)
        return self._exchange(pdata_pdus(context_id, command, dataset, self.assoc.dimse.maximum_pdu_size))

    def _context(self, instance: StoredInstance) -> tuple[int, str]:
        for syntax in candidate_syntaxes(instance.transfer_syntax_uid):
            context_id = self._contexts.get((instance.sop_class_uid, syntax))
            if context_id is not None:
                return context_id, syntax
        raise StoreFailure(no_context_message(instance, self.peer))

    def _dataset(self, instance: StoredInstance, syntax: str) -> bytes:
        data = self.read(instance)
        if syntax != instance.transfer_syntax_uid:
            try:
                if instance.transfer_syntax_uid in UNCOMPRESSED:
                    return reencoded(data, syntax)
                data = self.read.transcode(data, syntax)
            except Exception as exc:  # noqa: BLE001 - whatever pydicom and the codecs make of the file
                raise StoreFailure(f"Cannot encode instance {instance.public_id} in {syntax}: {exc}") from None
        dataset = data[dataset_start(data):]
        if len(dataset) % 2 and syntax == DEFLATED:
            dataset += b"\0"  # PS3.5 A.5: an odd deflated stream is padded (DCMTK refuses odd fragments)
        return dataset

    def _exchange(self, pdus: list[P_DATA]) -> int:
        self.pause_reactor()
        send(self.assoc, pdus)
        response = self._response()
        if response is None:
            self.broken = True
            self.assoc._handle_no_response()  # after a timeout, aborts the association
            self.resume_reactor()  # for it to see the end of the association
            raise StoreFailure(f'AET "{self.peer}" did not answer the C-STORE (aborted or timed out)')
        if response.Status is None:
            raise StoreFailure(f'AET "{self.peer}" answered the C-STORE without a status')
        return int(response.Status)

    # The association's reactor thread takes the DIMSE messages that arrive: it would take the
    # responses too. `Association.send_c_store` pauses it around each request; here it is paused
    # once, before the first request, until `resume_reactor` or pynetdicom's `release` (pynetdicom
    # 3.0; `reactor` closes the race of pynetdicom's pause).

    def pause_reactor(self) -> None:
        assoc = self.assoc
        if self._paused or threading.current_thread() is assoc:  # in a handler, the reactor is this thread
            return
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
        self._paused = True

    def resume_reactor(self) -> None:
        if self._paused:
            self.assoc._reactor_checkpoint.set()
            self._paused = False

    def receive(self, pdu: bytes) -> bytes | None:
        """The DUL thread's reading of each P-DATA PDU: a C-STORE response in one PDV is read here;
        pynetdicom (or the association's StoreReceiver, in a C-GET) reads the rest."""
        assoc = self.assoc
        values = [pdv_value(item) for item in pdv_items(pdu) or ()]
        status = None
        if assoc.dimse.message is None and not assoc.get_handlers(evt.EVT_DIMSE_RECV):
            status = store_response_status(values)
        if status is None:
            return self._next_receiver.receive(pdu) if self._next_receiver else pdu
        response = C_STORE()
        response.Status = status
        assoc.dimse.msg_queue.put((values[0][0], response))
        return None

    def _response(self) -> C_STORE | None:
        """The response; None if the association was aborted, or after the DIMSE timeout."""
        assoc = self.assoc
        timeout = assoc.dimse_timeout
        deadline = time.monotonic() + timeout if timeout else None
        while deadline is None or time.monotonic() < deadline:
            try:
                return assoc.dimse.msg_queue.get(timeout=ABORT_POLL)[1]
            except queue.Empty:
                if assoc.acse.is_aborted() or not assoc.dul.is_alive():
                    return None
        return None


# -- sending to a modality -----------------------------------------------------------------------


@dataclass(frozen=True)
class StoreOptions:
    """How /modalities/{id}/store (and later its job) sends; 0 and "" mean the defaults."""

    local_aet: str = ""  # the calling AET, unless the modality sets its own
    timeout: int = 0  # seconds, else the modality's, else DicomScuTimeout
    originator: MoveOriginator | None = None
    permissive: bool = False  # go on after an instance that fails


class Transfer:
    """Instances sent to a modality one at a time (the steps of a job), over as few associations as
    possible: one per group of `association_batches`, and a new one when an association breaks in
    permissive mode. Instances that cannot be read are counted and skipped, as Orthanc does; the
    first that fails otherwise raises its NetworkError, unless `options.permissive`."""

    def __init__(
        self,
        isengard: "Isengard",
        modality: Modality,
        instances: Sequence[StoredInstance],
        options: StoreOptions = StoreOptions(),
        read: Reader | None = None,
    ):
        self.modality = modality
        self.options = options
        self.read = read or storage_reader(isengard)
        self.settings = ScuSettings.from_config(isengard.config)
        if options.local_aet:
            self.settings = replace(self.settings, local_aet=options.local_aet)
        self.counts = SubOperations(len(instances))
        self._batches = association_batches(instances)
        self._sender: InstanceSender | None = None

    @property
    def done(self) -> bool:
        return not self._batches

    def send_next(self) -> None:
        batch = self._batches[0]
        if self._sender is None or not self._sender.usable:
            self.close()
            self._sender = self._associate(batch)
        if self._sender is not None:
            _send_one(self._sender, batch.pop(0), self.options.permissive)
        if not batch:
            self._batches.pop(0)
            self.close()

    def close(self) -> None:
        """Release the association, if one is open."""
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.resume_reactor()
            sender.close()
            if sender.assoc.is_established:
                sender.assoc.release()

    def _associate(self, batch: list[StoredInstance]) -> InstanceSender | None:
        """A sender over a new association for the batch; None if there is none in permissive mode,
        the batch being then counted as failed."""
        try:
            assoc = associate(self.modality, self.settings, proposed_contexts(batch), self.options.timeout)
        except NetworkError as exc:
            if isinstance(exc, NoPresentationContext):  # told as Orthanc tells it
                exc = StoreFailure(no_context_message(batch[0], self.modality.aet))
            if not self.options.permissive:
                raise exc from None
            log.warning("Ignoring an error in a permissive transfer: %s", exc)
            for instance in batch:
                self.counts.record_failure(instance)
            batch.clear()
            return None
        return InstanceSender(assoc, self.read, self.modality.aet, self.counts, self.options.originator)


def _send_one(sender: InstanceSender, instance: StoredInstance, permissive: bool) -> None:
    try:
        sender.send(instance)
    except MissingInstance as exc:
        log.warning("An instance was removed after the transfer was issued: %s", exc)
    except IsengardError as exc:
        if not permissive:
            raise
        log.warning("Ignoring an error in a permissive transfer: %s", exc)


def send_to_modality(
    isengard: "Isengard",
    modality: Modality,
    instances: Sequence[StoredInstance],
    options: StoreOptions = StoreOptions(),
    progress: Callable[[SubOperations], None] | None = None,
    read: Reader | None = None,
) -> SubOperations:
    """A whole Transfer (read from storage unless `read` is given), calling `progress` after each instance."""
    transfer = Transfer(isengard, modality, instances, options, read)
    try:
        while not transfer.done:
            transfer.send_next()
            if progress is not None:
                progress(transfer.counts)
    finally:
        transfer.close()
    return transfer.counts
