"""Parsing of a received DICOM file: the one place where incoming bytes become an instance."""

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from functools import cached_property

import pydicom
from pydicom.charset import decode_bytes
from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import IS, TEXT_VR_DELIMS, DSfloat
from pydicom.values import convert_value

from ..errors import ErrorCode, IsengardError
from .charsets import python_codec
from .identifiers import DicomIdentifiers
from .levels import Level
from .reader import read_common_file
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
ALL_MAIN_TAGS = frozenset(tag for tags in MAIN_DICOM_TAGS.values() for tag in tags)
INTEGER = re.compile(r"[+-]?[0-9]+")
CARDIAC_NUMBER_OF_IMAGES = Tag(0x0018, 0x1090)
# (ImagesInAcquisition, NumberOfTemporalPositions), (NumberOfSlices, NumberOfTimeSlices)
EXPECTED_COUNT_PAIRS = ((Tag(0x0020, 0x1002), Tag(0x0020, 0x0105)), (Tag(0x0054, 0x0081), Tag(0x0054, 0x0101)))
# The transfer syntax of a file without meta header, from the encoding found: (implicit VR, little endian).
ENCODING_SYNTAXES = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}
# What pydicom raises on truncated or corrupted input, depending on where the bytes go wrong.
CORRUPTION_ERRORS = (
    UserWarning, EOFError, ValueError, KeyError, TypeError, NotImplementedError,
    BytesLengthException, struct.error, zlib.error,
)


def parse_integer(text: str | None) -> int | None:
    """A whole number as Orthanc reads one: decimal with an optional sign, no spaces, 64 bits."""
    if text is None or not INTEGER.fullmatch(text):
        return None
    number = int(text)
    return number if -(2**63) <= number < 2**63 else None


def int32(number: int) -> int:
    """Orthanc keeps instance counts and positions in 32-bit integers, which wrap around."""
    return (number + 2**31) % 2**32 - 2**31


def bad_file(details: str) -> IsengardError:
    return IsengardError(ErrorCode.BAD_FILE_FORMAT, details)


@dataclass
class ParsedInstance:
    """A received DICOM file, parsed once, with what the index needs of it."""

    data: bytes
    dataset: Dataset
    identifiers: DicomIdentifiers
    main_tags: dict[Level, dict[BaseTag, str]] = field(repr=False)
    charset: "CharacterSet" = field(repr=False)

    @cached_property
    def transfer_syntax(self) -> str:
        """As in the meta header, else the encoding the dataset was found to use."""
        meta = self.dataset.file_meta
        if meta is not None and "TransferSyntaxUID" in meta:
            return str(meta.TransferSyntaxUID)
        return ENCODING_SYNTAXES.get(self.dataset.original_encoding, "")

    @property
    def sop_class_uid(self) -> str | None:
        return element_text(self.dataset, SOP_CLASS_UID, self.charset)

    @property
    def index_in_series(self) -> str | None:
        """Orthanc's IndexInSeries metadata: the InstanceNumber, else the ImageIndex, as written."""
        for tag in (INSTANCE_NUMBER, IMAGE_INDEX):
            text = element_text(self.dataset, tag, self.charset)
            if text is not None:
                return text.strip()
        return None

    @property
    def expected_number_of_instances(self) -> int | None:
        """How many instances the series announces, as Orthanc reads it from the series main tags:
        the CardiacNumberOfImages if positive, else the product of the first pair that is present
        (ImagesInAcquisition x NumberOfTemporalPositions, else NumberOfSlices x NumberOfTimeSlices)."""
        tags = self.main_tags[Level.SERIES]
        cardiac = parse_integer(tags.get(CARDIAC_NUMBER_OF_IMAGES))
        if cardiac is not None and cardiac > 0:
            return int32(cardiac)
        for pair in EXPECTED_COUNT_PAIRS:
            if all(tag in tags for tag in pair):
                first, second = (parse_integer(tags[tag]) for tag in pair)
                product = first * second if first is not None and second is not None else 0
                return int32(product) if product > 0 else None
        return None

    @cached_property
    def pixel_data_offset(self) -> int | None:
        """Where the pixel data element starts in the file, as Orthanc's PixelDataOffset (which
        it only finds in files with a meta header)."""
        raw = self.dataset._dict.get(PIXEL_DATA)
        if raw is None or self.data[128:132] != b"DICM":
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
    charset = CharacterSet.of(dataset)  # once: it takes as long as decoding a few values
    study_uid, series_uid, sop_uid = _required_uids(dataset, charset)
    identifiers = DicomIdentifiers(
        patient_id=element_text(dataset, PATIENT_ID, charset) or "",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
    )
    main_tags = _main_tags(dataset, charset)
    return ParsedInstance(data=data, dataset=dataset, identifiers=identifiers, main_tags=main_tags, charset=charset)


def _read_dataset(data: bytes) -> Dataset:
    dataset = read_common_file(data)  # as pydicom reads it, if well-formed (so never truncated)
    if dataset is not None:
        return dataset
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
    except CORRUPTION_ERRORS as exc:
        raise bad_file(f"Cannot parse a truncated or corrupted DICOM file: {exc}") from None
    for raw in dataset._dict.values():
        if isinstance(raw, RawDataElement) and raw.length != UNDEFINED_LENGTH and raw.value is not None:
            if len(raw.value) != raw.length:
                raise bad_file(f"Truncated DICOM file: element {raw.tag} is cut short")
    if _ends_before(dataset, len(data)):
        raise bad_file("Truncated DICOM file: it ends within the header of an element")
    return dataset


def _ends_before(dataset: Dataset, size: int) -> bool:
    """Whether bytes remain after the last element: pydicom silently stops at a partial header.
    (Deflated files are read from their inflated copy, where positions differ.)"""
    last = next(reversed(dataset._dict.values()), None)
    if not isinstance(last, RawDataElement) or last.length == UNDEFINED_LENGTH or last.value_tell is None:
        return False
    if dataset.file_meta is not None and dataset.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return False
    return last.value_tell + last.length < size


def _required_uids(dataset: Dataset, charset: "CharacterSet") -> list[str]:
    """The study, series and SOP instance UIDs: as Orthanc, an absent one is an inexistent tag,
    an empty one a bad file."""
    values = []
    for tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID):
        value = element_text(dataset, tag, charset)
        if value is None:
            raise IsengardError(ErrorCode.INEXISTENT_TAG, f"The DICOM file has no {pydicom.datadict.keyword_for_tag(tag)}")
        values.append(value)
    if not all(value.strip() for value in values):
        raise bad_file("The DICOM file has an empty StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID")
    return values


def _main_tags(dataset: Dataset, charset: "CharacterSet") -> dict[Level, dict[BaseTag, str]]:
    """The main tags of each level, in their order; a tag kept at two levels is read once."""
    texts = {tag: element_text(dataset, tag, charset) for tag in ALL_MAIN_TAGS.intersection(dataset._dict)}
    return {
        level: {tag: text for tag in MAIN_DICOM_TAGS[level] if (text := texts.get(tag)) is not None} for level in Level
    }


# VRs whose values are character strings (all others are binary numbers or sequences).
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
# Person names are decoded whole (components and groups reset code extensions), not split per value.
PN_DELIMITERS = TEXT_VR_DELIMS | {ord("\\"), ord("^"), ord("=")}
LATIN1_TERMS = (("ISO_IR 100",), ("ISO 2022 IR 100",))
ASCII_TERMS = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
# JIS X 0201 Roman: bytes 0x5C and 0x7E are the yen sign and the overline, also when they delimit values.
JIS_ROMAN_TERMS = frozenset({"ISO_IR 13", "ISO 2022 IR 13"})
JIS_ROMAN = str.maketrans({"\\": "\u00a5", "~": "\u203e"})
NON_ASCII_LATIN1 = str.maketrans({c: None for c in range(0x80, 0x100)})


@dataclass(frozen=True)
class CharacterSet:
    """How Orthanc 1.10.1 turns the string values of a dataset into text, per its Specific
    Character Set. Its quirks are reproduced, since main tag values are compared, searched and
    hashed (PatientID) exactly as Orthanc writes them:
    - under Latin-1 alone, values are kept as stored: cut at the first NUL, and trailing spaces
      are removed only from even-length values (the others lack their padding byte);
    - under the other character sets, each value loses its trailing spaces (and numbers their
      leading ones too), as pydicom does;
    - an ASCII default repertoire drops the bytes above 0x7F;
    - JIS X 0201 decodes byte 0x5C as a yen sign, value delimiters included."""

    terms: tuple[str, ...]  # of the Specific Character Set, () when absent
    codecs: tuple[str, ...]  # the Python codecs that decode it (the default encoding when absent)

    @classmethod
    def of(cls, dataset: Dataset) -> "CharacterSet":
        value = dataset.get("SpecificCharacterSet")
        terms = [] if value is None else value if isinstance(value, (MultiValue, list, tuple)) else [value]
        codecs = dataset._character_set
        return cls(tuple(str(t).strip() for t in terms), tuple([codecs] if isinstance(codecs, str) else codecs))

    @property
    def keeps_stored_bytes(self) -> bool:
        return self.terms in LATIN1_TERMS

    def decode(self, data: bytes, delimiters: set[int]) -> str:
        return decode_bytes(data, self.codecs, delimiters)

    def adjust(self, text: str) -> str:
        first = self.terms[0] if self.terms else None
        if first in ASCII_TERMS:
            return text.translate(NON_ASCII_LATIN1)
        if first in JIS_ROMAN_TERMS:
            return text.translate(JIS_ROMAN)
        return text


def element_text(dataset: Dataset, tag: BaseTag, charset: "CharacterSet | None" = None) -> str | None:
    """The value of a top-level element as Orthanc 1.10.1 writes it: decoded per the character
    set (`charset`: the dataset's, given when known), multiple values joined by backslashes;
    None if absent, a sequence or binary."""
    raw = dataset._dict.get(tag)
    if raw is None:
        return None
    charset = charset or CharacterSet.of(dataset)
    if isinstance(raw, RawDataElement):
        vr = raw.VR or _dictionary_vr(tag)
        data = raw.value or b""
        if vr == "UN":
            return _unknown_vr_text(data, tag, charset)
        if vr in STRING_VRS and charset.keeps_stored_bytes:
            return _stored_text(data, charset)
        if vr == "PN":
            return _person_name_text(data, charset)
    try:
        if isinstance(raw, RawDataElement) and vr in STRING_VRS:
            # The value pydicom's element would hold, without making the element: through the
            # dataset (hooks, DataElement), that costs three times the conversion.
            text = value_text(vr, convert_value(vr, raw, list(charset.codecs)))
        else:
            element = dataset[tag]
            text = value_text(element.VR, element.value)
    except (ValueError, TypeError, UnicodeError):
        return None
    return None if text is None else charset.adjust(text)


def value_text(vr: str, value: object) -> str | None:
    """The text of an element's value: values joined by backslashes; None for a sequence or bytes."""
    if vr == "SQ":
        return None
    if value is None:
        return ""
    if isinstance(value, bytes):
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(_scalar_text(v) for v in value)
    return _scalar_text(value)


def _scalar_text(value: object) -> str:
    if isinstance(value, (DSfloat, IS)) and getattr(value, "original_string", None):
        text = str(value.original_string).strip()
    else:
        text = str(value)
    return text.split("\0", 1)[0]  # DCMTK reads values as C strings


def _stored_text(data: bytes, charset: CharacterSet) -> str:
    """A Latin-1 value as stored (see CharacterSet)."""
    if len(data) % 2 == 0:
        data = data.rstrip(b" ")
    return charset.decode(data.split(b"\0", 1)[0], TEXT_VR_DELIMS)


def _person_name_text(data: bytes, charset: CharacterSet) -> str:
    """A person name as written, empty trailing groups included ('Wang^XiaoDong=王^小東=')."""
    return charset.adjust(charset.decode(data.split(b"\0", 1)[0], PN_DELIMITERS).rstrip(" "))


def _unknown_vr_text(data: bytes, tag: BaseTag, charset: CharacterSet) -> str | None:
    """An element stored with VR UN: Orthanc shows its bytes as they are when the dictionary
    says it is a string (minus a NUL padding byte), and nothing when it is binary."""
    if _dictionary_vr(tag) not in STRING_VRS:
        return None
    if len(data) % 2 == 0 and data.endswith(b"\0"):
        data = data[:-1]
    text = charset.decode(data, TEXT_VR_DELIMS)
    if not charset.keeps_stored_bytes and not data.isascii():
        text = text.rstrip(" ")  # converted from its character set, which normalizes it
    return charset.adjust(text)


def _dictionary_vr(tag: BaseTag) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"
