"""The C-FIND SCP of the Patient Root and Study Root Query/Retrieve information models (FIND).

A query runs on the engine of /tools/find (index/find.py), with C-FIND's rule of case: values
match with their case, person names without it unless CaseSensitivePN. A wildcard on a tag whose
VR forbids it, or a query without a known QueryRetrieveLevel, fails with 0xC000, as in Orthanc.

The answers follow Orthanc 1.10.1:
- each holds the keys of the query, in their order, and no other (not even the unique keys of the
  upper levels), plus SpecificCharacterSet: that of DefaultEncoding, whatever the query's (which
  only decodes the query), the characters it lacks being dropped from the values;
- the QueryRetrieveLevel comes back as asked; a key the resource lacks comes back empty;
- values come from the index: main tags of the level and of its ancestors, and the computed
  attributes of the level (counts of related resources, ModalitiesInStudy, SOPClassesInStudy).
  Once the query holds another key (a sequence, a private tag, any tag outside the index), keys
  outside the index are read from the file of the resource's first instance; without such a key,
  main tags of lower levels come back empty;
- beyond LimitFindResults (LimitFindInstances at the image level) the answers stop with the status
  Cancel (0xFE00), as they do on a C-CANCEL.
Two deliberate differences: RetrieveAETitle is always this server's AET (Orthanc answers it empty
when the query asks for it), and private tags are answered with their values (Orthanc's are empty).
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName
from pynetdicom import _config, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from ..config import Configuration
from ..dicom.charsets import ENCODINGS, python_codec
from ..dicom.levels import Level
from ..dicom.parse import STRING_VRS, CharacterSet, element_text
from ..dicom.tags import MAIN_DICOM_TAGS, SPECIFIC_CHARACTER_SET
from ..errors import ErrorCode, IsengardError, bad_request
from ..index.computed import COMPUTED_TAGS, is_computed
from ..index.find import (
    Constraint,
    FindQuery,
    file_datasets,
    find,
    indexed_level,
    matchable_text,
    parse_constraint,
    requested_tags,
)
from ..index.index import IndexTransaction, Resource
from ..storage import StorageArea
from .modalities import Request
from .text_answers import PLAIN_CODECS, Element, TextAnswer

if TYPE_CHECKING:
    from ..server import Isengard
    from .scp import DicomServer, Peer

log = logging.getLogger(__name__)

# pynetdicom would otherwise decode and format every identifier of C-FIND (and C-MOVE, C-GET)
# requests and responses for its debug log, whatever the log level.
_config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = False

FIND_SYNTAXES = {
    PatientRootQueryRetrieveInformationModelFind: Request.FIND,
    StudyRootQueryRetrieveInformationModelFind: Request.FIND,
}

PENDING = 0xFF00
CANCEL = 0xFE00
UNABLE_TO_PROCESS = 0xC000

QUERY_RETRIEVE_LEVEL = Tag(0x0008, 0x0052)
RETRIEVE_AE_TITLE = Tag(0x0008, 0x0054)
LEVELS = {"PATIENT": Level.PATIENT, "STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE,
          "INSTANCE": Level.INSTANCE}

# Tags whose values need no file: those of the index, the computed ones, and those of the answer
# itself (Orthanc reads the files for a RetrieveAETitle too).
KNOWN_WITHOUT_FILES = frozenset(
    {int(tag) for tags in MAIN_DICOM_TAGS.values() for tag in tags}
    | {tag for tags in COMPUTED_TAGS.values() for tag in tags}
    | {QUERY_RETRIEVE_LEVEL, RETRIEVE_AE_TITLE}
)
# Constraints that Orthanc ignores from the modalities of some manufacturers (a private creator of Vitrea).
IGNORED_CONSTRAINTS = {"Vitrea": frozenset({Tag(0x5653, 0x0010)})}
NUMBER_VRS = {"US": int, "SS": int, "UL": int, "SL": int, "UV": int, "SV": int, "FL": float, "FD": float}


@dataclass(frozen=True)
class Key:
    """A key of the query: its tag, its VR, and its value as text (None for a sequence)."""

    tag: BaseTag
    vr: str
    value: str | None

    @property
    def is_sequence(self) -> bool:
        return self.value is None


@dataclass
class CFind:
    """A C-FIND request, parsed."""

    level: Level
    level_text: str  # as the query writes it, for the answers
    keys: list[Key]
    query: FindQuery

    @property
    def reads_files(self) -> bool:
        """Whether values of keys outside the index come from the files (see the module's docstring)."""
        return any(key.is_sequence or key.tag not in KNOWN_WITHOUT_FILES for key in self.keys)


@dataclass(frozen=True)
class FindSettings:
    own_aet: str
    default_encoding: str  # Orthanc's name of a character set
    case_sensitive_pn: bool
    limit: int  # most answers (0: no limit)
    ignored: frozenset[BaseTag] = frozenset()  # tags whose constraints are ignored

    @classmethod
    def of(cls, config: Configuration, level: Level, manufacturers: list[str]) -> "FindSettings":
        limit = config.limit_find_instances if level == Level.INSTANCE else config.limit_find_results
        ignored = frozenset(tag for name in manufacturers for tag in IGNORED_CONSTRAINTS.get(name, ()))
        return cls(config.dicom_aet, config.default_encoding, config.case_sensitive_pn, limit, ignored)


def handle_find(server: "DicomServer", event: evt.Event, peer: "Peer") -> Iterator[tuple[int, Dataset | None]]:
    """pynetdicom's handler of EVT_C_FIND: the answers as pending statuses, then a final status
    (pynetdicom adds Success when this generator ends)."""
    isengard = server.isengard
    try:
        identifier = event.identifier
        with_default_charset(identifier, isengard.config.default_encoding)
        level, level_text = query_level(identifier)
        manufacturers = [m.manufacturer for m in isengard.modalities.with_aet(peer.calling_aet)]
        settings = FindSettings.of(isengard.config, level, manufacturers)
        request = parse_request(identifier, level, level_text, settings)
        count, answers, complete = run_find(isengard, request, settings)
        log.info("C-FIND from %s at the %s level: %d answers", peer, level.name.lower(), count)
        for answer in answers:  # built one by one: a value may come from a file
            if event.is_cancelled:
                log.info("C-FIND from %s cancelled", peer)
                yield CANCEL, None
                return
            yield PENDING, answer
    except (IsengardError, ValueError, TypeError, KeyError) as exc:  # pydicom decodes the query lazily
        log.error("C-FIND from %s failed: %s", peer, exc)
        yield UNABLE_TO_PROCESS, None
        return
    if not complete:
        log.warning("C-FIND from %s: more than %d answers; the others are left out", peer, settings.limit)
        yield CANCEL, None


# -- the query -----------------------------------------------------------------------------------


def with_default_charset(identifier: Dataset, encoding: str) -> None:
    """Values of a query without SpecificCharacterSet decode per DefaultEncoding (pydicom decodes
    them on first access, with Latin-1 otherwise)."""
    if SPECIFIC_CHARACTER_SET not in identifier:
        identifier._read_charset = identifier._parent_encoding = [python_codec(encoding)]


def query_level(identifier: Dataset) -> tuple[Level, str]:
    text = element_text(identifier, QUERY_RETRIEVE_LEVEL)
    if text is None:
        raise bad_request("C-FIND request without QueryRetrieveLevel (0008,0052)")
    level = LEVELS.get(text.strip().upper())
    if level is None:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown QueryRetrieveLevel: {text}")
    return level, text


def parse_request(identifier: Dataset, level: Level, level_text: str, settings: FindSettings) -> CFind:
    keys = [_key(identifier, tag) for tag in identifier.keys() if tag != SPECIFIC_CHARACTER_SET and tag.element != 0]
    constraints = [c for key in keys if key.tag not in settings.ignored if (c := _constraint(key, settings))]
    limit = settings.limit + 1 if settings.limit else 0  # one more tells whether there are more
    return CFind(level, level_text, keys, FindQuery(level=level, constraints=constraints, limit=limit))


def _key(identifier: Dataset, tag: BaseTag) -> Key:
    text = matchable_text(identifier, tag)  # before pydicom converts the raw element
    vr = _dictionary_vr(tag) or str(identifier[tag].VR)
    return Key(tag, vr, None if vr == "SQ" else text or "")


def _dictionary_vr(tag: BaseTag) -> str | None:
    """The VR the dictionary gives a tag (the first of "US or SS"), None for unknown tags."""
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return None


def _constraint(key: Key, settings: FindSettings) -> Constraint | None:
    if key.is_sequence or key.tag == QUERY_RETRIEVE_LEVEL:
        return None  # Orthanc matches no sequence, but returns it
    case_sensitive = settings.case_sensitive_pn if key.vr == "PN" else True
    return parse_constraint(int(key.tag), key.value or "", case_sensitive, key.vr)


# -- the answers ---------------------------------------------------------------------------------


def run_find(
    isengard: "Isengard", request: CFind, settings: FindSettings
) -> tuple[int, Iterator[Dataset | TextAnswer], bool]:
    """How many answers, the answers, and whether they are all of them (False when the limit cut
    them short). An answer that reads a file is built when taken: the first ones go out before
    all files are read, and a C-CANCEL stops the reading."""
    with isengard.index.read() as index:
        found = find(index, isengard.storage_for_find(answers=False), request.query)
        kept = found[: settings.limit] if settings.limit else found
        answers = AnswerWriter(request, settings).answers(index, isengard.storage_for_find(answers=True), kept)
    return len(kept), answers, len(kept) == len(found)


class AnswerWriter:
    def __init__(self, request: CFind, settings: FindSettings):
        self.request = request
        self.own_aet = settings.own_aet
        self.codec, self.charset_term = ENCODINGS[settings.default_encoding]
        self.plain_text = self.codec in PLAIN_CODECS  # answers of text only are encoded by TextAnswer

    def answers(
        self, index: IndexTransaction, storage: StorageArea | None, found: list[Resource]
    ) -> Iterator[Dataset | TextAnswer]:
        """Values that only the files hold are left empty without `storage` (StorageAccessOnFind)."""
        if not found:
            return iter(())
        level = self.request.level
        asked = [key for key in self.request.keys if key.tag not in (QUERY_RETRIEVE_LEVEL, RETRIEVE_AE_TITLE)]
        indexed = [key.tag for key in asked if not key.is_sequence and _in_index(key.tag, level)]
        values = requested_tags(index, storage, found, [int(tag) for tag in indexed])
        outside = [int(key.tag) for key in asked if key.tag not in indexed]
        ids = [resource.internal_id for resource in found]
        reads_files = outside and self.request.reads_files and storage is not None
        files = file_datasets(index, storage, level, ids, outside) if reads_files else {}  # type: ignore[arg-type]
        return (self._answer(values[i], files.get(i)) for i in ids)

    def _answer(self, values: dict[int, str], file: Dataset | None) -> Dataset | TextAnswer:
        texts: dict[BaseTag, Element] = {SPECIFIC_CHARACTER_SET: (SPECIFIC_CHARACTER_SET, "CS", self.charset_term)}
        copies = []
        charset = CharacterSet.of(file) if file else None
        for key in self.request.keys:
            text = values.get(key.tag)
            if text is None and charset is not None and key.tag in file:
                text = element_text(file, key.tag, charset)  # the file's text, as the index would hold it
            if key.tag == QUERY_RETRIEVE_LEVEL:
                texts[key.tag] = (key.tag, "CS", self.request.level_text)
            elif text is not None or file is None or key.tag not in file:
                texts[key.tag] = (key.tag, key.vr, text)
            else:  # a sequence, or a value without text (binary, unknown VR)
                copies.append(self._copy(file[key.tag]))
        texts[RETRIEVE_AE_TITLE] = (RETRIEVE_AE_TITLE, "AE", self.own_aet)
        answer = TextAnswer(list(texts.values()), self.codec, self._dataset)
        if copies or not self.plain_text or any(vr not in STRING_VRS for _, vr, _ in answer.elements):
            dataset = answer.dataset()
            for copy in copies:
                dataset.add(copy)
            return dataset
        return answer

    def _dataset(self, elements: list[Element]) -> Dataset:
        answer = Dataset()
        for tag, vr, text in elements:
            answer.add(_element(tag, vr, None) if text is None else self._text_element(tag, vr, text))
        return answer

    def _text_element(self, tag: BaseTag, vr: str, text: str) -> DataElement:
        if vr in NUMBER_VRS:
            return _element(tag, vr, _numbers(text, NUMBER_VRS[vr]))
        return _element(tag, vr, self._representable(text) if vr in STRING_VRS else None)

    def _copy(self, element: DataElement) -> DataElement:
        """An element of a stored file, its text decoded (that of sequence items too) and fit for the answer."""
        if element.VR == "SQ":
            return _element(element.tag, "SQ", [self._copy_item(item) for item in element.value])
        return _element(element.tag, element.VR, self._representable(element.value))

    def _copy_item(self, item: Dataset) -> Dataset:
        copy = Dataset()
        for element in item:  # iterating decodes the values, per the file's character set
            if element.tag != SPECIFIC_CHARACTER_SET:
                copy.add(self._copy(element))
        return copy

    def _representable(self, value: Any) -> Any:
        """Text without the characters that the answers' character set lacks (as Orthanc drops them)."""
        if isinstance(value, (str, PersonName)):
            return str(value).encode(self.codec, "ignore").decode(self.codec)
        if isinstance(value, (MultiValue, list)):
            return [self._representable(item) for item in value]
        return value


def _element(tag: BaseTag, vr: str, value: Any) -> DataElement:
    """An element of an answer: its values come from stored files, so pydicom need not check them."""
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def _in_index(tag: BaseTag, level: Level) -> bool:
    return is_computed(int(tag), level) or indexed_level(int(tag), level) is not None


def _numbers(text: str, kind: type) -> Any:
    """The value of a binary number VR from its text ("1\\2" for two values); None if it is no number."""
    try:
        numbers = [kind(item) for item in text.split("\\")] if text else []
    except ValueError:
        return None
    return numbers[0] if len(numbers) == 1 else numbers or None
