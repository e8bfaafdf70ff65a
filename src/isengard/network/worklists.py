"""Modality worklists: C-FIND on the Modality Worklist Information Model, both ways.

As the server (SCP), Isengard does what Orthanc's sample worklists plugin does with the
"Worklists" option: each query is matched against the `.wl` files of the Database folder
(read anew at each query, so other programs may add and remove them), in the folder's order.
Matching is Orthanc's (its HierarchicalMatcher): single values, wildcards (text VRs), lists,
date and time ranges, person names without case unless CaseSensitivePN; an item of a sequence
in the query is matched against each item of that sequence in the worklist, of which one must
match (a worklist without the sequence matches). An answer holds the requested keys that the
worklist has (absent ones are left out), the sequence items that match, and the Specific
Character Set of DefaultEncoding, in which its text is written.

Deliberate difference: Orthanc 1.10.1 sends one answer more than LimitAnswers before its
0xFE00 status; Isengard sends LimitAnswers answers, as the option says.

As the client (SCU), `find_worklists_scu` sends a query to a modality and returns its answers.
"""

import copy
import io
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pynetdicom import build_context, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

from ..dicom.charsets import ENCODINGS, python_codec
from ..dicom.parse import CharacterSet, element_text
from ..dicom.reader import read_common_file
from ..dicom.tags import SPECIFIC_CHARACTER_SET
from ..errors import ErrorCode, IsengardError
from ..index.find import Constraint, parse_constraint, value_representation
from .modalities import Modality, Request

if TYPE_CHECKING:
    from ..config import Configuration
    from .scp import DicomServer, Peer
    from .scu import ScuSettings

log = logging.getLogger(__name__)

PENDING = 0xFF00
UNABLE_TO_PROCESS = 0xC000
MATCHING_TERMINATED = 0xFE00  # the status Orthanc ends a C-FIND with when answers were cut
FIND_ANSWER_STATUSES = (0x0000, 0xFF00, 0xFF01)

WORKLIST_SYNTAXES = {ModalityWorklistInformationFind: Request.FIND_WORKLIST}

SCHEDULED_PROCEDURE_STEP_SEQUENCE = Tag(0x0040, 0x0100)
# Left out of the answers, even when requested, as Orthanc and DCMTK's wlmscpfs do.
WITHHELD_TAGS = (Tag(0x0002, 0x0003), Tag(0x0008, 0x0018))  # (Media Storage) SOP Instance UID


# -- the "Worklists" option ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorklistsSettings:
    enabled: bool = False
    database: Path | None = None  # a relative folder is taken from the working directory, as in Orthanc
    filter_issuer_aet: bool = False  # match ScheduledStationAETitle against the caller's AET
    limit_answers: int = 0  # 0: no limit


def parse_worklists_option(value: Mapping[str, Any]) -> WorklistsSettings:
    """The "Worklists" option of Orthanc's worklists plugin; ValueError naming the faulty field."""
    expected = {"Enable": (bool, "true or false"), "Database": (str, "a string"),
                "FilterIssuerAet": (bool, "true or false"), "LimitAnswers": (int, "a non-negative integer")}
    for key, (kind, description) in expected.items():
        given = value.get(key)
        if key in value and (not isinstance(given, kind) or kind is int and (isinstance(given, bool) or given < 0)):
            raise ValueError(f'"{key}" must be {description}')
    enabled = value.get("Enable", False)
    if enabled and not value.get("Database"):
        raise ValueError('"Database" must name the folder of the worklists when "Enable" is true')
    return WorklistsSettings(
        enabled=enabled,
        database=Path(value["Database"]) if value.get("Database") else None,
        filter_issuer_aet=value.get("FilterIssuerAet", False),
        limit_answers=value.get("LimitAnswers", 0),
    )


# -- matching ---------------------------------------------------------------------------------------


def _is_sequence(dataset: Dataset, tag: BaseTag) -> bool:
    return dataset[tag].VR == "SQ"


def _constraint(tag: BaseTag, text: str, case_sensitive_pn: bool) -> Constraint | None:
    """Only person names may match without case. IsengardError for wildcards on a VR that has
    none, which fails the query, as in Orthanc."""
    case_sensitive = case_sensitive_pn or value_representation(int(tag)) != "PN"
    return parse_constraint(int(tag), text, case_sensitive)


class WorklistMatcher:
    """A worklist query: the keys it requests, the constraints on their values, and a matcher
    for the item of each sequence it holds (None when that item is empty: any item matches)."""

    def __init__(self, query: Dataset, case_sensitive_pn: bool = False):
        self.keys: list[BaseTag] = []
        self.constraints: list[Constraint] = []
        self.sequences: dict[BaseTag, WorklistMatcher | None] = {}
        charset = CharacterSet.of(query)
        for tag in query.keys():
            if tag == SPECIFIC_CHARACTER_SET or tag.element == 0:  # group lengths mean nothing here
                continue
            if _is_sequence(query, tag):
                self.sequences[tag] = self._item_matcher(query[tag].value, case_sensitive_pn)
                continue
            self.keys.append(tag)
            text = element_text(query, tag, charset)  # None for binary values, which constrain nothing
            constraint = None if text is None or text == "*" else _constraint(tag, text, case_sensitive_pn)
            if constraint is not None:
                self.constraints.append(constraint)

    @staticmethod
    def _item_matcher(items: Sequence, case_sensitive_pn: bool) -> "WorklistMatcher | None":
        if len(items) > 1:
            raise IsengardError(ErrorCode.BAD_REQUEST, "A sequence of a worklist query holds more than one item")
        if not items or len(items[0]) == 0:
            return None
        return WorklistMatcher(items[0], case_sensitive_pn)

    def matches(self, dataset: Dataset) -> bool:
        charset = CharacterSet.of(dataset)
        for constraint in self.constraints:
            if not constraint.matches(element_text(dataset, Tag(constraint.tag), charset)):
                return False  # an absent value matches nothing
        for tag, matcher in self.sequences.items():
            if matcher is None or tag not in dataset or not _is_sequence(dataset, tag):
                continue
            if not any(matcher.matches(item) for item in dataset[tag].value):
                return False
        return True

    def extract(self, dataset: Dataset) -> Dataset:
        """The requested keys of a matching dataset, with the sequence items that match."""
        answer = Dataset()
        for tag in self.keys:
            if tag in dataset:
                answer.add(dataset[tag])
        for tag, matcher in self.sequences.items():
            if tag in dataset and _is_sequence(dataset, tag):
                items = dataset[tag].value
                kept = [_decoded(item) if matcher is None else matcher.extract(item)
                        for item in items if matcher is None or matcher.matches(item)]
                answer.add(DataElement(tag, "SQ", Sequence(kept)))
        return answer


def _decoded(dataset: Dataset) -> Dataset:
    """A copy whose values are all decoded, so that they are written in the answer's character
    set (pydicom writes the elements it has not decoded with their original bytes)."""
    copied = Dataset()
    for element in dataset:
        if element.VR == "SQ":
            element = DataElement(element.tag, "SQ", Sequence([_decoded(item) for item in element.value]))
        copied.add(element)
    return copied


# -- the SCP ----------------------------------------------------------------------------------------------


@dataclass
class WorklistAnswers:
    datasets: list[Dataset]
    complete: bool = True  # False when LimitAnswers cut them


def _issuer_query(query: Dataset, issuer_aet: str) -> Dataset:
    """FilterIssuerAet: the query with the caller's AET as ScheduledStationAETitle (whatever
    value the query gave it, as Orthanc's plugin does)."""
    filtered = copy.deepcopy(query)
    if SCHEDULED_PROCEDURE_STEP_SEQUENCE not in filtered or not filtered[SCHEDULED_PROCEDURE_STEP_SEQUENCE].value:
        filtered.ScheduledProcedureStepSequence = Sequence([Dataset()])
    steps = filtered[SCHEDULED_PROCEDURE_STEP_SEQUENCE].value
    if len(steps) != 1:
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, "The query has several scheduled procedure steps")
    steps[0].ScheduledStationAETitle = issuer_aet
    return filtered


def _worklist_files(folder: Path) -> Iterator[Path]:
    """The `.wl` files (any case) of the folder, in its own order, as Orthanc lists them."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() and os.path.splitext(entry.name)[1].lower() == ".wl":
                yield Path(entry.path)


def _read_worklist(path: Path, default_encoding: str) -> Dataset | None:
    """A worklist file, or None (logged) if it is not a DICOM file (with preamble and meta header)."""
    try:
        data = path.read_bytes()
        dataset = read_common_file(data) or pydicom.dcmread(io.BytesIO(data))  # the former is faster
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        log.warning("Worklist file %s skipped: %s", path, exc)
        return None
    if SPECIFIC_CHARACTER_SET not in dataset:
        dataset._read_charset = dataset._parent_encoding = [python_codec(default_encoding)]
    return dataset


def find_worklists(
    settings: WorklistsSettings,
    query: Dataset,
    issuer_aet: str,
    default_encoding: str = "Latin1",
    case_sensitive_pn: bool = False,
) -> WorklistAnswers:
    """The answers of the Database folder to a query; OSError if the folder cannot be read,
    IsengardError for a query that cannot be matched."""
    if SPECIFIC_CHARACTER_SET not in query:
        query._read_charset = query._parent_encoding = [python_codec(default_encoding)]
    if settings.database is None:
        raise OSError("no worklists folder is configured")
    extractor = WorklistMatcher(query, case_sensitive_pn)
    matcher = extractor
    if settings.filter_issuer_aet:  # the answers are still extracted per the query as sent, as by Orthanc
        matcher = WorklistMatcher(_issuer_query(query, issuer_aet), case_sensitive_pn)
    answers = WorklistAnswers([])
    for path in _worklist_files(settings.database):
        worklist = _read_worklist(path, default_encoding)
        if worklist is None or not matcher.matches(worklist):
            continue
        if settings.limit_answers and len(answers.datasets) == settings.limit_answers:
            answers.complete = False
            break
        answer = extractor.extract(worklist)
        for tag in WITHHELD_TAGS:
            answer.pop(tag, None)
        answer.SpecificCharacterSet = ENCODINGS[default_encoding][1]
        answers.datasets.append(answer)
    return answers


def serve_worklist_find(
    server: "DicomServer", event: evt.Event, peer: "Peer"
) -> Iterator[tuple[int, Dataset | None]]:
    """The handler of C-FIND on the worklist model: a pending answer per match, then a final status."""
    config = server.isengard.config
    try:
        answers = find_worklists(
            config.worklists, event.identifier, peer.calling_aet, server.isengard.ingest.default_encoding,
            config.case_sensitive_pn,
        )
    except OSError as exc:
        log.error("Worklist C-FIND from %s: cannot read the worklists folder: %s", peer, exc)
        yield UNABLE_TO_PROCESS, None
        return
    except IsengardError as exc:
        log.error("Worklist C-FIND from %s: %s", peer, exc)
        yield UNABLE_TO_PROCESS, None
        return
    for answer in answers.datasets:
        if event.is_cancelled:
            yield MATCHING_TERMINATED, None
            return
        yield PENDING, answer
    if not answers.complete:
        log.warning("Worklist C-FIND from %s: more than %d answers, the others are left out", peer,
                    config.worklists.limit_answers)
        yield MATCHING_TERMINATED, None


def worklists_enabled(config: "Configuration") -> bool:
    """Without the option, the worklist model is refused at negotiation, as Orthanc without the plugin does."""
    return config.worklists.enabled


# -- the SCU -----------------------------------------------------------------------------------------------


def find_worklists_scu(
    modality: Modality, settings: "ScuSettings", query: Dataset, timeout: int = 0
) -> list[Dataset]:
    """C-FIND of a worklist query toward a modality: its answers, or NetworkError."""
    from .scu import FindUnavailable, association  # here: scu imports the configuration, which imports this module

    # Verification too: a peer without worklists then accepts the association, which tells it apart (error 2016).
    contexts = [build_context(ModalityWorklistInformationFind), build_context(Verification)]
    with association(modality, settings, contexts, timeout) as assoc:
        if not any(cx.abstract_syntax == ModalityWorklistInformationFind for cx in assoc.accepted_contexts):
            raise FindUnavailable(f"Remote AET is {modality.aet}")
        answers = []
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            _check_find_status(modality, status)
            if identifier is not None:
                answers.append(identifier)
        return answers


def _check_find_status(modality: Modality, status: Dataset) -> None:
    """Orthanc's errors: an unprocessable query is a 422, any other failure a 500."""
    if "Status" not in status:
        details = f'C-FIND SCU to AET "{modality.aet}": no answer (aborted or timed out)'
        raise IsengardError(ErrorCode.NETWORK_PROTOCOL, details)
    if status.Status in FIND_ANSWER_STATUSES:
        return
    details = f'C-FIND SCU to AET "{modality.aet}" has failed with DIMSE status 0x{status.Status:04X}'
    if status.Status == UNABLE_TO_PROCESS:
        raise IsengardError(ErrorCode.NETWORK_PROTOCOL, details + " (unable to process - invalid query ?)", 422)
    raise IsengardError(ErrorCode.NETWORK_PROTOCOL, details)
