"""Query/retrieve as a client (SCU): C-FIND, C-MOVE and C-GET toward remote modalities, as Orthanc 1.10.1.

Queries. A query holds the tags the caller gives. Normalized (the default), it keeps only the tags
that its level allows (the modules of the level and of those above, as Orthanc lists them), and the
"*" wildcards that the modality's manufacturer does not support are emptied. The identifiers of the
level and of those above are always asked for (empty, or "*" toward a GE modality). The query goes
in DefaultEncoding, unless it names its own SpecificCharacterSet.

Answers are kept as Orthanc keeps them: a map of tags to text, without sequences, private or binary
elements, with the QueryRetrieveLevel added if missing and the SpecificCharacterSet of DefaultEncoding
(Orthanc re-encodes the answers in it).

Retrieval is a C-MOVE toward a target AET (by default in the REST API, Isengard itself, whose DICOM
server stores what the remote sends) or a C-GET, the remote sending the instances back on the same association, where
they are stored through the ingest pipeline. `retrieve` runs the commands of one retrieval on one
association and reports each to a progress callback; `retrieval_steps` runs them one by one, as the
steps of a job.

Deliberate differences: a C-MOVE or C-GET at the patient level uses the Patient Root model when the
remote accepts it (Orthanc 1.10.1 always moves through Study Root); every resource of a retrieval is
checked before the first command is sent; the "MediaStorage" tags that Orthanc leaks into instance
queries naming a SOP class or instance UID are not sent.
"""

import copy
import logging
import struct
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import lru_cache

from pydicom import Dataset
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pynetdicom import StoragePresentationContexts, build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from ..dicom.charsets import ENCODINGS
from ..dicom.dicom_json import dataset_to_json
from ..dicom.levels import Level
from ..dicom.tags import (
    PATIENT_ID,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID,
    format_tag,
    tag_name,
)
from ..errors import ErrorCode, IsengardError, bad_request
from ..ingest import Origin
from .files import file_header
from .modalities import Modality, bad_format
from .presentation import UNCOMPRESSED
from .scu import MAX_AET_LENGTH, PENDING, SUCCESS, FindUnavailable, NetworkError, ScuSettings, association

log = logging.getLogger(__name__)

TagMap = dict[int, str]  # tags and their text values, as Orthanc's DicomMap

QUERY_RETRIEVE_LEVEL = 0x00080052
ACCESSION_NUMBER = 0x00080050
SOP_CLASSES_IN_STUDY = 0x00080062
MEDIUM_PRIORITY = 0  # the priority of Orthanc's requests
UNABLE_TO_PROCESS = 0xC000
OUT_OF_RESOURCES = 0xA700
MAX_CONTEXTS = 128  # presentation contexts of an association

LEVEL_NAMES = {Level.PATIENT: "PATIENT", Level.STUDY: "STUDY", Level.SERIES: "SERIES", Level.INSTANCE: "IMAGE"}
# Orthanc's names of the levels in requests, whatever their case.
_LEVELS = {"PATIENT": Level.PATIENT, "STUDY": Level.STUDY, "SERIES": Level.SERIES, "INSTANCE": Level.INSTANCE,
           "IMAGE": Level.INSTANCE}


def _tags(*keywords: str) -> frozenset[int]:
    tags = {keyword: tag_for_keyword(keyword) for keyword in keywords}
    assert None not in tags.values(), [keyword for keyword, tag in tags.items() if tag is None]
    return frozenset(tags.values())  # type: ignore[arg-type]


# The attributes of each level's modules that a normalized query keeps (observed on Orthanc 1.10.1).
_MODULES = {
    Level.PATIENT: _tags(
        "ReferencedPatientSequence", "PatientName", "PatientID", "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence", "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDs",
        "OtherPatientNames", "OtherPatientIDsSequence", "EthnicGroup", "PatientSpeciesDescription",
        "PatientSpeciesCodeSequence", "PatientBreedDescription", "PatientBreedCodeSequence",
        "BreedRegistrationSequence", "ResponsiblePerson", "ResponsiblePersonRole", "ResponsibleOrganization",
        "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    ),
    Level.STUDY: _tags(
        "StudyDate", "StudyTime", "AccessionNumber", "IssuerOfAccessionNumberSequence", "ReferringPhysicianName",
        "ReferringPhysicianIdentificationSequence", "StudyDescription", "ProcedureCodeSequence", "PhysiciansOfRecord",
        "PhysiciansOfRecordIdentificationSequence", "NameOfPhysiciansReadingStudy",
        "PhysiciansReadingStudyIdentificationSequence", "ReferencedStudySequence", "StudyInstanceUID", "StudyID",
        "RequestingServiceCodeSequence", "ReasonForPerformedProcedureCodeSequence",
    ),
    Level.SERIES: _tags(
        "SeriesDate", "SeriesTime", "Modality", "SeriesDescription", "SeriesDescriptionCodeSequence",
        "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence", "OperatorsName",
        "OperatorIdentificationSequence", "ReferencedPerformedProcedureStepSequence", "RelatedSeriesSequence",
        "AnatomicalOrientationType", "BodyPartExamined", "ProtocolName", "PatientPosition", "SeriesInstanceUID",
        "SeriesNumber", "Laterality", "SmallestPixelValueInSeries", "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime", "PerformedProcedureStepID", "PerformedProcedureStepDescription",
        "PerformedProtocolCodeSequence", "RequestAttributesSequence", "CommentsOnThePerformedProcedureStep",
    ),
    Level.INSTANCE: _tags(
        "InstanceCreationDate", "InstanceCreationTime", "InstanceCreatorUID", "SOPClassUID", "SOPInstanceUID",
        "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID", "CodingSchemeIdentificationSequence",
        "TimezoneOffsetFromUTC", "ContributingEquipmentSequence", "InstanceNumber",
        "LongitudinalTemporalInformationModified", "HL7StructuredDocumentReferenceSequence", "SOPInstanceStatus",
        "SOPAuthorizationDateTime", "SOPAuthorizationComment", "AuthorizationEquipmentCertificationNumber",
        "EncryptedAttributesSequence", "OriginalAttributesSequence", "MACParametersSequence",
        "DigitalSignaturesSequence",
    ),
}
# The counts and lists that a level's query may ask for, beyond the attributes of its modules.
_LEVEL_EXTRAS = {
    Level.PATIENT: _tags("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                         "NumberOfPatientRelatedInstances"),
    Level.STUDY: _tags("ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
                       "NumberOfStudyRelatedInstances"),
    Level.SERIES: _tags("NumberOfSeriesRelatedInstances"),
    Level.INSTANCE: frozenset(),
}
ALLOWED_TAGS = {
    level: frozenset({SPECIFIC_CHARACTER_SET}).union(
        _LEVEL_EXTRAS[level], *(module for module_level, module in _MODULES.items() if module_level <= level)
    )
    for level in Level
}
# The identifiers a query at each level asks for, with those of the levels above.
_IDENTIFIERS = {
    Level.PATIENT: (PATIENT_ID,),
    Level.STUDY: (ACCESSION_NUMBER, STUDY_INSTANCE_UID),
    Level.SERIES: (SERIES_INSTANCE_UID,),
    Level.INSTANCE: (SOP_INSTANCE_UID,),
}
# The keys of a C-MOVE or C-GET at each level, copied from an answer (also those a query of its children copies).
RETRIEVE_KEYS = {
    Level.PATIENT: (PATIENT_ID,),
    Level.STUDY: (STUDY_INSTANCE_UID,),
    Level.SERIES: (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID),
    Level.INSTANCE: (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID),
}
# The file meta tags of Orthanc's answers, copies of these tags.
_FILE_META_COPIES = ((0x00020002, SOP_CLASS_UID), (0x00020003, SOP_INSTANCE_UID))
# What a retrieval reports of each answer it retrieves.
RETRIEVED_TAGS = (QUERY_RETRIEVE_LEVEL, PATIENT_ID, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID,
                  ACCESSION_NUMBER)

# The queries of the deprecated /modalities/{id}/find-* routes: these tags (empty unless the caller gives
# them), and no other (but ModalitiesInStudy at the study level).
LEGACY_TEMPLATES = {
    Level.PATIENT: _tags("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs"),
    Level.STUDY: _tags("StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
                       "PatientID", "StudyInstanceUID", "StudyID"),
    Level.SERIES: _tags("SeriesDate", "SeriesTime", "AccessionNumber", "Modality", "SeriesDescription", "OperatorsName",
                        "PatientID", "BodyPartExamined", "ProtocolName", "StudyInstanceUID", "SeriesInstanceUID",
                        "SeriesNumber", "PerformedProcedureStepDescription"),
    Level.INSTANCE: _tags("InstanceCreationDate", "InstanceCreationTime", "SOPInstanceUID", "AccessionNumber",
                          "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "InstanceNumber"),
}
_LEGACY_EXTRAS = {Level.STUDY: _tags("ModalitiesInStudy")}

FIND_MODELS = {
    Level.PATIENT: PatientRootQueryRetrieveInformationModelFind,
    Level.STUDY: StudyRootQueryRetrieveInformationModelFind,
    Level.SERIES: StudyRootQueryRetrieveInformationModelFind,
    Level.INSTANCE: StudyRootQueryRetrieveInformationModelFind,
}
MOVE_MODELS = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
GET_MODELS = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
# The associations of queries and C-MOVEs propose these, as Orthanc's.
CONTROL_CONTEXTS = tuple(
    build_context(uid, list(UNCOMPRESSED))
    for uid in (Verification, FIND_MODELS[Level.PATIENT], MOVE_MODELS[0], FIND_MODELS[Level.STUDY], MOVE_MODELS[1])
)
# The SOP classes a C-GET receives, unless the resources name theirs (SOPClassesInStudy): pynetdicom's 120
# most common storage classes, as Orthanc proposes DCMTK's.
COMMON_STORAGE_CLASSES = tuple(context.abstract_syntax for context in StoragePresentationContexts)


class RetrieveMethod(str, Enum):
    MOVE = "C-MOVE"
    GET = "C-GET"


def parse_level(text: str) -> Level:
    """A level as Orthanc reads it in requests: Patient, Study, Series, Instance or Image, in any case."""
    level = _LEVELS.get(text.upper())
    if level is None:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE)
    return level


# --- Building queries -------------------------------------------------------------------------------------------


def outgoing_query(level: Level, fields: Mapping[int, str], manufacturer: str, normalize: bool = True) -> TagMap:
    """The tags a C-FIND sends for `fields`, as Orthanc builds them."""
    if normalize:
        fields = _supported_wildcards({t: v for t, v in fields.items() if t in ALLOWED_TAGS[level]}, manufacturer)
    query = dict(fields)
    universal = "*" if manufacturer == "GE" else ""
    for upper in Level:
        if upper <= level:
            for tag in _IDENTIFIERS[upper]:
                query.setdefault(tag, universal)
    query[QUERY_RETRIEVE_LEVEL] = LEVEL_NAMES[level]
    return query


def _supported_wildcards(fields: Mapping[int, str], manufacturer: str) -> TagMap:
    """Empty the universal wildcards ("*") that the manufacturer does not support: in dates, or anywhere."""
    if manufacturer == "GenericNoUniversalWildcard":
        return {tag: "" if value == "*" else value for tag, value in fields.items()}
    if manufacturer == "GenericNoWildcardInDates":
        return {tag: "" if value == "*" and _vr(tag) == "DA" else value for tag, value in fields.items()}
    return dict(fields)


def legacy_query(level: Level, fields: Mapping[int, str], copied: Mapping[int, str] | None = None) -> TagMap:
    """The query of the deprecated find routes: the level's template, the caller's values of its tags,
    then the `copied` identifiers of an upper answer."""
    kept = LEGACY_TEMPLATES[level] | _LEGACY_EXTRAS.get(level, frozenset())
    query = dict.fromkeys(LEGACY_TEMPLATES[level], "")
    query.update({tag: value for tag, value in fields.items() if tag in kept})
    query.update(copied or {})
    return query


def child_query(parent_level: Level, answer: Mapping[int, str], fields: Mapping[int, str]) -> TagMap:
    """The query of the children of an answer: the caller's fields, and the answer's keys."""
    query = dict(fields)
    for tag in RETRIEVE_KEYS[parent_level]:
        if tag not in answer:
            raise IsengardError(ErrorCode.INEXISTENT_TAG)
        query[tag] = answer[tag]
    return query


def retrieved_resource(answer: Mapping[int, str]) -> TagMap:
    """What a retrieval keeps of an answer: its level and identifiers."""
    return {tag: answer[tag] for tag in RETRIEVED_TAGS if tag in answer}


def _retrieve_identifier(resource: Mapping[int, str], manufacturer: str) -> tuple[Level, TagMap]:
    """The level and keys of a C-MOVE or C-GET; Bad request if the resource lacks one of its keys."""
    level = parse_level(resource.get(QUERY_RETRIEVE_LEVEL, ""))
    if any(tag not in resource for tag in RETRIEVE_KEYS[level]):
        raise IsengardError(ErrorCode.BAD_REQUEST)
    keys = _supported_wildcards({tag: resource[tag] for tag in RETRIEVE_KEYS[level]}, manufacturer)
    return level, {**keys, QUERY_RETRIEVE_LEVEL: LEVEL_NAMES[level]}


# --- Encoding identifiers, decoding answers ---------------------------------------------------------------------

_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
_NUL_PADDED_VRS = frozenset({"UI", "OB", "OW", "OF", "OD", "OL", "OV", "UN"})


@lru_cache(maxsize=4096)
def _vr(tag: int) -> str:
    try:
        return dictionary_VR(tag).split(" or ")[0]  # "US or SS": the first
    except KeyError:
        return "UN"


def _encode(tag: int, text: str, codec: str, little_endian: bool) -> tuple[str, bytes]:
    """The VR and bytes of a value given as text. The bytes are written as they are, which spares
    pydicom's checks: a query may hold values that no instance would ("*", ranges...)."""
    vr = _vr(tag)
    if vr == "SQ":
        if text:
            raise bad_format(f"A sequence cannot be given a value in a query: {format_tag(tag)}")
        return vr, b""
    number_format = _NUMBER_FORMATS.get(vr)
    if number_format is not None:
        return vr, _encode_numbers(tag, text, number_format, little_endian)
    data = text.encode(codec, errors="ignore")  # characters the charset lacks are dropped, as by Orthanc
    if len(data) % 2:
        data += b"\0" if vr in _NUL_PADDED_VRS else b" "
    return vr, data


def _encode_numbers(tag: int, text: str, number_format: str, little_endian: bool) -> bytes:
    if not text:
        return b""
    try:
        parse = float if number_format in "fd" else int
        numbers = [parse(part) for part in text.split("\\")]
        return struct.pack(("<" if little_endian else ">") + number_format * len(numbers), *numbers)
    except (ValueError, struct.error):
        raise bad_format(f"Bad value for the tag {format_tag(tag)}: {text}") from None


def _identifier(fields: Mapping[int, str], charset: str, transfer_syntax: str) -> Dataset:
    """The dataset of a request, encoded for `transfer_syntax` in the query's character set or `charset`."""
    syntax = UID(transfer_syntax)
    implicit, little_endian = syntax.is_implicit_VR, syntax.is_little_endian
    fields = {SPECIFIC_CHARACTER_SET: charset, **fields}
    codec = python_encoding.get(fields[SPECIFIC_CHARACTER_SET].split("\\")[0].strip(), "latin_1")
    dataset = Dataset()
    for tag, text in sorted(fields.items()):
        vr, data = _encode(tag, text, codec, little_endian)
        dataset[tag] = RawDataElement(BaseTag(tag), vr, len(data), data, 0, implicit, little_endian)
    return dataset


def _answer(identifier: Dataset, level: Level, charset: str) -> TagMap:
    """An answer as Orthanc keeps it: text values only, in `charset`, with its level, and its SOP class and
    instance UIDs shown a second time as file meta tags (Orthanc stores answers as files)."""
    try:
        values = dataset_to_json(identifier, "short", max_length=0)  # decoded as /instances/{id}/tags decodes
    except ValueError as exc:
        raise NetworkError(f"Cannot read an answer: {exc}") from None
    codec = python_encoding.get(charset, "latin_1")
    answer = {}
    for key, value in values.items():
        tag = int(key.replace(",", ""), 16)
        if isinstance(value, str) and not (tag >> 16) & 1 and tag & 0xFFFF:  # no private tag, no group length
            answer[tag] = _reencoded(value, codec)
    answer[SPECIFIC_CHARACTER_SET] = charset
    answer.setdefault(QUERY_RETRIEVE_LEVEL, LEVEL_NAMES[level])
    for meta_tag, tag in _FILE_META_COPIES:
        if tag in answer:
            answer[meta_tag] = answer[tag]
    return answer


def _reencoded(value: str, codec: str) -> str:
    """A value as Orthanc keeps it, re-encoded in DefaultEncoding: the characters it lacks are dropped, and
    the trailing spaces, taken for padding when read back."""
    return value.encode(codec, errors="ignore").decode(codec).rstrip(" ")


@lru_cache(maxsize=4096)
def json_name(tag: int) -> str:
    """A tag's name in Orthanc's JSON (DCMTK's dictionary, "RETIRED_" prefixes...), as /tags names it."""
    probe = Dataset()
    probe[tag] = RawDataElement(BaseTag(tag), None, 0, b"", 0, True, True)
    item = dataset_to_json(probe, "full").get(format_tag(tag))
    return item["Name"] if item else tag_name(tag)  # dataset_to_json leaves out the tags after the pixel data


def tags_json(values: Mapping[int, str], mode: str = "full") -> dict:
    """A tag map in Orthanc's JSON: "full" (by tag, with names), "short" (by tag) or "simplify" (by name)."""
    ordered = sorted(values.items())
    if mode == "short":
        return {format_tag(tag): value for tag, value in ordered}
    if mode == "simplify":
        return dict(sorted((json_name(tag), value) for tag, value in ordered))
    return {format_tag(tag): {"Name": json_name(tag), "Type": "String", "Value": value} for tag, value in ordered}


# --- Associations -----------------------------------------------------------------------------------------------


def charset_of(encoding: str) -> str:
    """The SpecificCharacterSet of an encoding of the DefaultEncoding option."""
    return ENCODINGS[encoding][1]


def _check(operation: str, modality: Modality, response: Dataset, accepted: Sequence[int]) -> None:
    if "Status" not in response:  # pynetdicom's answer to a timeout, an abort or a broken connection
        raise NetworkError(f'{operation} to AET "{modality.aet}": no answer (timed out, or aborted association)')
    status = response.Status
    if status in accepted:
        return
    details = f'{operation} SCU to AET "{modality.aet}" has failed with DIMSE status 0x{status:04X}'
    if operation == "C-FIND" and status == UNABLE_TO_PROCESS:
        raise IsengardError(ErrorCode.NETWORK_PROTOCOL, details + " (unable to process - invalid query ?)", 422)
    raise NetworkError(details)


class Connection:
    """An association with a modality, for a sequence of C-FIND, C-MOVE or C-GET commands."""

    def __init__(self, assoc: Association, modality: Modality, charset: str):
        self.assoc = assoc
        self.modality = modality
        self.charset = charset  # the SpecificCharacterSet of requests, and of answers as kept
        self._message_id = 0

    def find(self, level: Level, fields: Mapping[int, str], normalize: bool = True) -> list[TagMap]:
        model = FIND_MODELS[level]
        context = self._accepted(model)
        if context is None:
            raise FindUnavailable(f"Remote AET is {self.modality.aet}")
        query = outgoing_query(level, fields, self.modality.manufacturer, normalize)
        identifier = _identifier(query, self.charset, context.transfer_syntax[0])
        answers = []
        for response, found in self.assoc.send_c_find(identifier, model, self._next_id(), MEDIUM_PRIORITY):
            _check("C-FIND", self.modality, response, (SUCCESS, *PENDING))
            if response.Status in PENDING and found is not None:
                answers.append(_answer(found, level, self.charset))
        return answers

    def move(self, resource: Mapping[int, str], target_aet: str) -> None:
        """C-MOVE toward `target_aet`; the remote sends the instances on associations of its own."""
        model, identifier = self._retrieve_request("C-MOVE", MOVE_MODELS, resource)
        try:
            responses = self.assoc.send_c_move(identifier, target_aet[:MAX_AET_LENGTH], model, self._next_id(),
                                               MEDIUM_PRIORITY)
            for response, _identifier in responses:
                _check("C-MOVE", self.modality, response, (SUCCESS, PENDING[0]))
        except ValueError as exc:  # an AET that pynetdicom refuses
            raise bad_request(f"Bad target AET: {exc}") from None

    def get(self, resource: Mapping[int, str]) -> None:
        """C-GET: the remote sends the instances back on this association (see `get_connection`)."""
        model, identifier = self._retrieve_request("C-GET", GET_MODELS, resource)
        for response, _identifier in self.assoc.send_c_get(identifier, model, self._next_id(), MEDIUM_PRIORITY):
            _check("C-GET", self.modality, response, (SUCCESS, PENDING[0]))

    def _retrieve_request(
        self, operation: str, models: tuple[str, str], resource: Mapping[int, str]
    ) -> tuple[str, Dataset]:
        """The information model (Patient Root at the patient level if accepted) and the identifier."""
        level, keys = _retrieve_identifier(resource, self.modality.manufacturer)
        patient_root, study_root = models
        for model in (patient_root, study_root) if level is Level.PATIENT else (study_root,):
            context = self._accepted(model)
            if context is not None:
                return model, _identifier(keys, self.charset, context.transfer_syntax[0])
        if operation == "C-MOVE":  # Orthanc's own code and words
            raise IsengardError(ErrorCode.NO_CMOVE_HANDLER, f"Remote AET is {self.modality.aet}")
        raise NetworkError(f"The {operation} command is not supported by the remote SCP (AET {self.modality.aet})")

    def _accepted(self, abstract_syntax: str) -> PresentationContext | None:
        return next((cx for cx in self.assoc.accepted_contexts if cx.abstract_syntax == abstract_syntax), None)

    def _next_id(self) -> int:
        self._message_id += 1
        return self._message_id


@contextmanager
def control_connection(
    modality: Modality, settings: ScuSettings, encoding: str = "Latin1", timeout: int = 0
) -> Iterator[Connection]:
    """An association for queries and C-MOVEs."""
    with association(modality, settings, CONTROL_CONTEXTS, timeout) as assoc:
        yield Connection(assoc, modality, charset_of(encoding))


StoreFunction = Callable[[bytes, Origin], object]  # IngestPipeline.store


@dataclass(frozen=True)
class Receiver:
    """Where the instances of a C-GET go, and the transfer syntaxes they may come in."""

    store: StoreFunction
    transfer_syntaxes: tuple[str, ...]


@contextmanager
def get_connection(
    modality: Modality, settings: ScuSettings, receiver: Receiver, sop_classes: Sequence[str] = (),
    encoding: str = "Latin1", timeout: int = 0,
) -> Iterator[Connection]:
    """An association for C-GETs, proposing to receive `sop_classes` (by default the common storage classes)."""
    classes = tuple(dict.fromkeys(sop_classes or COMMON_STORAGE_CLASSES))[: MAX_CONTEXTS - len(GET_MODELS)]
    contexts = [copy.copy(cx) for cx in _get_contexts(classes, receiver.transfer_syntaxes)]  # pynetdicom numbers them
    roles = [build_role(uid, scp_role=True) for uid in classes]
    handlers = [(evt.EVT_C_STORE, _store_handler(receiver.store))]
    with association(modality, settings, contexts, timeout, roles=roles, handlers=handlers) as assoc:
        yield Connection(assoc, modality, charset_of(encoding))


@lru_cache(maxsize=16)
def _get_contexts(sop_classes: tuple[str, ...], transfer_syntaxes: tuple[str, ...]) -> tuple[PresentationContext, ...]:
    """One context per SOP class and transfer syntax when they fit: the remote can then send each instance
    as it has it (offered one context with several syntaxes, it accepts one and transcodes to it). Else
    one context per class. Built once (pynetdicom checks every UID, ~80 ms for 120 classes)."""
    contexts = [build_context(model, list(UNCOMPRESSED)) for model in GET_MODELS]
    if len(contexts) + len(sop_classes) * len(transfer_syntaxes) <= MAX_CONTEXTS:
        contexts += [build_context(uid, syntax) for uid in sop_classes for syntax in transfer_syntaxes]
    else:
        contexts += [build_context(uid, list(transfer_syntaxes)) for uid in sop_classes]
    return tuple(contexts)


def _store_handler(store: StoreFunction) -> Callable[[evt.Event], int]:
    """Store each instance of a C-GET as received, behind a file meta header, without decoding it."""

    def handle(event: evt.Event) -> int:
        request, assoc = event.request, event.assoc
        header = file_header(request.AffectedSOPClassUID, request.AffectedSOPInstanceUID, event.context.transfer_syntax)
        origin = Origin(source="DicomProtocol", remote_ip=assoc.acceptor.address, remote_aet=assoc.acceptor.ae_title,
                        called_aet=assoc.requestor.ae_title)
        try:
            store(header + request.DataSet.getvalue(), origin)
        except IsengardError as exc:
            log.error("C-GET from %s: %s not stored: %s", origin.remote_aet, request.AffectedSOPInstanceUID, exc)
            return OUT_OF_RESOURCES
        return SUCCESS

    return handle


# --- Retrieval ---------------------------------------------------------------------------------------------------

Progress = Callable[[int, int], None]  # (commands done, commands in all)


@dataclass(frozen=True)
class Retrieval:
    """A retrieval from a modality: one command per resource (each a tag map with its QueryRetrieveLevel)."""

    modality: Modality
    settings: ScuSettings
    resources: tuple[TagMap, ...]
    method: RetrieveMethod = RetrieveMethod.MOVE
    target_aet: str = ""  # C-MOVE: who receives the instances
    timeout: int = 0
    encoding: str = "Latin1"

    def check(self) -> None:
        """Bad request if a resource lacks the keys of its level: nothing is sent then."""
        for resource in self.resources:
            _retrieve_identifier(resource, self.modality.manufacturer)


def retrieve(retrieval: Retrieval, receiver: Receiver | None = None, progress: Progress | None = None) -> None:
    """Run the C-MOVEs (or the C-GETs, whose instances go to `receiver`) of a retrieval on one association."""
    for done in retrieval_steps(retrieval, receiver):
        if progress is not None:
            progress(done, len(retrieval.resources))


def retrieval_steps(retrieval: Retrieval, receiver: Receiver | None = None) -> Iterator[int]:
    """The commands of a retrieval, one per iteration (a job's step), on one association; yields how many
    are done. Closing the iterator before its end releases the association (a job paused or canceled)."""
    retrieval.check()
    if not retrieval.resources:
        return
    with _retrieve_connection(retrieval, receiver) as connection:
        for done, resource in enumerate(retrieval.resources, 1):
            if retrieval.method is RetrieveMethod.GET:
                connection.get(resource)
            else:
                connection.move(resource, retrieval.target_aet)
            yield done


@contextmanager
def _retrieve_connection(retrieval: Retrieval, receiver: Receiver | None) -> Iterator[Connection]:
    modality, settings = retrieval.modality, retrieval.settings
    encoding, timeout = retrieval.encoding, retrieval.timeout
    if retrieval.method is RetrieveMethod.MOVE:
        with control_connection(modality, settings, encoding, timeout) as connection:
            yield connection
        return
    if receiver is None:
        raise ValueError("A C-GET needs a receiver of the instances")
    sop_classes = [uid for resource in retrieval.resources for uid in _sop_classes(resource)]
    with get_connection(modality, settings, receiver, sop_classes, encoding, timeout) as connection:
        yield connection


def _sop_classes(resource: Mapping[int, str]) -> list[str]:
    return [uid.strip() for uid in resource.get(SOP_CLASSES_IN_STUDY, "").split("\\") if uid.strip()]


# --- Queries kept in memory ---------------------------------------------------------------------------------------


@dataclass
class Query:
    """A query run on a modality and its answers, kept for /queries (Orthanc's QueryRetrieveHandler)."""

    modality_name: str
    modality: Modality
    level: Level
    query: TagMap  # as the caller gave it, before normalization
    local_aet: str  # the caller's LocalAet, else DicomAet
    normalize: bool = True
    timeout: int = 0
    answers: list[TagMap] = field(default_factory=list)

    def run(self, settings: ScuSettings, encoding: str) -> None:
        """C-FIND on the modality; the answers replace those of a previous run."""
        settings = replace(settings, local_aet=self.local_aet)
        with control_connection(self.modality, settings, encoding, self.timeout) as connection:
            self.answers = connection.find(self.level, self.query, self.normalize)

    def answer(self, index: int) -> TagMap:
        if not 0 <= index < len(self.answers):
            raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE)
        return self.answers[index]


class QueryRegistry:
    """The queries kept in memory, at most `size` (QueryRetrieveSize): the least recently used goes first."""

    def __init__(self, size: int):
        self.size = size
        self._queries: OrderedDict[str, Query] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, query: Query) -> str:
        query_id = str(uuid.uuid4())
        with self._lock:
            self._queries[query_id] = query
            while len(self._queries) > self.size:
                self._queries.popitem(last=False)
        return query_id

    def get(self, query_id: str) -> Query:
        with self._lock:
            query = self._queries.get(query_id)
            if query is None:
                raise IsengardError(ErrorCode.UNKNOWN_RESOURCE)
            self._queries.move_to_end(query_id)
            return query

    def delete(self, query_id: str) -> None:
        with self._lock:
            self._queries.pop(query_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._queries)
