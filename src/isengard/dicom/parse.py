"""Parsing of a received DICOM file: the one place where incoming bytes become an instance."""

import io
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import DSfloat, IS

from ..errors import ErrorCode, IsengardError
from .charsets import python_codec
from .identifiers import DicomIdentifiers
from .levels import Level
from .tags import (
    IMAGE_INDEX,
    INSTANCE_NUMBER,
    MAIN_DICOM_TAGS,
    PATIENT_ID,
    PIXEL_DATA,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID,
)

# pydicom only warns when encapsulated data ends before its delimiter: that is a
# truncated file, which must be refused rather than stored without its pixels.
warnings.filterwarnings("error", message="End of file reached before delimiter", category=UserWarning)
# Values that break VR rules are common in real files: keep them as they are, silently.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

UNDEFINED_LENGTH = 0xFFFFFFFF


def bad_file(details: str) -> IsengardError:
    return IsengardError(ErrorCode.BAD_FILE_FORMAT, details)


@dataclass
class ParsedInstance:
    """A received DICOM file, parsed once, with what the index needs of it."""

    data: bytes
    dataset: Dataset
    identifiers: DicomIdentifiers
    main_tags: dict[Level, dict[BaseTag, str]] = field(repr=False)

    @cached_property
    def transfer_syntax(self) -> str:
        meta = self.dataset.file_meta
        return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""

    @property
    def sop_class_uid(self) -> str:
        return element_text(self.dataset, SOP_CLASS_UID) or ""

    @property
    def index_in_series(self) -> int | None:
        for tag in (INSTANCE_NUMBER, IMAGE_INDEX):
            text = element_text(self.dataset, tag)
            if text:
                try:
                    return int(text.split("\\")[0])
                except ValueError:
                    continue
        return None

    @cached_property
    def pixel_data_offset(self) -> int | None:
        """Where the pixel data element starts in the file, as Orthanc's PixelDataOffset."""
        raw = self.dataset._dict.get(PIXEL_DATA)
        if raw is None:
            return None
        if not isinstance(raw, RawDataElement) or raw.value_tell is None:
            return None
        header = 8 if raw.is_implicit_VR else 12  # explicit OB/OW headers carry 2 reserved bytes
        return raw.value_tell - header


def parse_instance(data: bytes, default_encoding: str = "Latin1") -> ParsedInstance:
    """Parse a DICOM file, refusing non-DICOM and truncated input with BadFileFormat.
    Text of a file without SpecificCharacterSet is decoded per `default_encoding` (Orthanc's name)."""
    if not data:
        raise bad_file("Received an empty DICOM file")
    dataset = _read_dataset(data)
    if SPECIFIC_CHARACTER_SET not in dataset:
        # pydicom decodes values lazily, on first access, with the charset it read from the
        # file (Latin-1 when there is none): the site's default set now applies to all of them.
        dataset._read_charset = dataset._parent_encoding = [python_codec(default_encoding)]
    identifiers = DicomIdentifiers(
        patient_id=element_text(dataset, PATIENT_ID) or "",
        study_instance_uid=_required_uid(dataset, STUDY_INSTANCE_UID),
        series_instance_uid=_required_uid(dataset, SERIES_INSTANCE_UID),
        sop_instance_uid=_required_uid(dataset, SOP_INSTANCE_UID),
    )
    main_tags = {level: _main_tags(dataset, level) for level in Level}
    return ParsedInstance(data=data, dataset=dataset, identifiers=identifiers, main_tags=main_tags)


def _read_dataset(data: bytes) -> Dataset:
    try:
        try:
            dataset = pydicom.dcmread(io.BytesIO(data))
        except InvalidDicomError:
            # A bare dataset without preamble nor meta header: accepted, as DCMTK does,
            # when it reads as one that holds at least a SOP instance UID.
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
            if SOP_INSTANCE_UID not in dataset:
                raise InvalidDicomError from None
    except InvalidDicomError:
        raise bad_file(f"Cannot parse an invalid DICOM file (size: {len(data)} bytes)") from None
    except RecursionError:
        raise bad_file("Cannot parse a DICOM file whose sequences are nested too deeply") from None
    except (UserWarning, EOFError, ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise bad_file(f"Cannot parse a truncated or corrupted DICOM file: {exc}") from None
    for raw in dataset._dict.values():
        if isinstance(raw, RawDataElement) and raw.length != UNDEFINED_LENGTH and raw.value is not None:
            if len(raw.value) != raw.length:
                raise bad_file(f"Truncated DICOM file: element {raw.tag} is cut short")
    return dataset


def _required_uid(dataset: Dataset, tag: BaseTag) -> str:
    value = element_text(dataset, tag)
    if not value:
        raise IsengardError(ErrorCode.INEXISTENT_TAG, f"The DICOM file has no {pydicom.datadict.keyword_for_tag(tag)}")
    return value


def _main_tags(dataset: Dataset, level: Level) -> dict[BaseTag, str]:
    tags = {}
    for tag in MAIN_DICOM_TAGS[level]:
        text = element_text(dataset, tag)
        if text is not None:
            tags[tag] = text
    return tags


def element_text(dataset: Dataset, tag: BaseTag) -> str | None:
    """The value of a top-level element as Orthanc writes it: decoded per the character
    set, multiple values joined by backslashes; None if absent, a sequence or binary."""
    if tag not in dataset:
        return None
    try:
        return value_text(dataset[tag])
    except (ValueError, TypeError, UnicodeError):
        return None


def value_text(element: DataElement) -> str | None:
    if element.VR == "SQ":
        return None
    value = element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(_scalar_text(v) for v in value)
    return _scalar_text(value)


def _scalar_text(value: object) -> str:
    if isinstance(value, (DSfloat, IS)) and getattr(value, "original_string", None):
        return str(value.original_string).strip()
    return str(value)
