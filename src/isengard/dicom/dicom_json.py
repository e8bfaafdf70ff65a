"""DICOM datasets as the JSON of Orthanc's ``/instances/{id}/tags`` and ``/header`` routes.

The rules reproduce the answers of Orthanc 1.10.1 (on DCMTK 3.6.8), as observed on real and
synthetic files; this is not the DICOM JSON model of PS3.18, which these routes do not use.

* Values are read from the raw bytes while pydicom has not converted the element, because
  Orthanc shows the stored text (a DS ``" 1.50 "`` stays so), not a normalised value.
* Text is cut at the first NUL; an even-length value loses its trailing spaces (the DICOM
  padding), an odd-length one keeps them; UIs lose every whitespace.
* Numbers (US, SS, UL, SL, FL, FD) become backslash-joined text, floats with 17 significant
  digits as C++ prints a double; an odd length gets a zero pad byte; AT shows its first tag.
* Binary VRs (OB, OW, OF, OD, OL, OV, UN), SV/UV and the DICOMDIR offsets are null, and so are
  implicit-VR elements whose VR the dictionary leaves ambiguous ("US or SS"...). An explicit
  UN is text if the dictionary knows the tag as text (shown verbatim), null otherwise.
* A value whose UTF-8 text is longer than ``max_length`` bytes is "TooLong" (null).
* Top-level elements after the pixel data (7fe0,0010) are left out.

Known differences: private tags are named by the site "Dictionary" only (Orthanc also uses
DCMTK's private dictionary), public tags newer than DCMTK's dictionary get their keyword,
and ISO_IR 13 / ISO 2022 text is decoded as pydicom does (Orthanc turns backslashes to yens).
"""

import struct
from collections.abc import Mapping
from functools import lru_cache

from pydicom.charset import convert_encodings, decode_bytes, python_encoding
from pydicom.datadict import dictionary_VR, get_entry, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_deferred_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

MODES = ("full", "short", "simplify")
UNKNOWN_NAME = "Unknown Tag & Data"
DEFAULT_MAX_LENGTH = 256

SPECIFIC_CHARACTER_SET = 0x00080005
PIXEL_REPRESENTATION = 0x00280103
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF

# A declared tag: (VR, name, private creator); None as creator only matches creator-less elements.
DictionaryEntry = tuple[str, str, str | None]
PrivateDictionary = Mapping[int, tuple[str, str] | DictionaryEntry]

_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "SV", "UV"})
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "AT": "HH"}
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_ALL_VRS = _TEXT_VRS | _BINARY_VRS | _NUMBER_FORMATS.keys() | {"SQ"}
# DCMTK gives the DICOMDIR offsets a VR of its own ("up"), which Orthanc shows as null.
_DICOMDIR_OFFSETS = frozenset({0x00041200, 0x00041202, 0x00041400, 0x00041420, 0x00041504})
# "US or SS" elements that DCMTK resolves from the PixelRepresentation of their dataset.
_PIXEL_VALUE_TAGS = frozenset(
    {0x00280106, 0x00280107, 0x00280108, 0x00280109, 0x00280110, 0x00280111, 0x00280120, 0x00280121}
)
# Retired by the DICOM edition of pydicom, still current in Orthanc's (DCMTK's) dictionary.
_NOT_YET_RETIRED = frozenset(
    {
        0x00101000,  # OtherPatientIDs
        0x00380004,
        0x00701807,
        0x00701808,
        0x30040010,
        0x30040012,
        0x30060085,
        0x30060088,
        0x3008002B,
        0x30100090,
    }
)
# Orthanc's "ASCII" keeps printable characters and line feeds only.
_NOT_ASCII = bytes(b for b in range(256) if not (0x20 <= b < 0x7F or b == 0x0A))
_ISO_2022_MULTIBYTE = frozenset({"ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58"})
# Where ISO 2022 escape sequences stop applying.
_PN_DELIMITERS = {0x5C, 0x5E, 0x3D}
_TEXT_DELIMITERS = {0x0D, 0x0A, 0x09, 0x0C}
_VALUE_DELIMITERS = {0x5C}


def dataset_to_json(
    ds: Dataset,
    mode: str = "full",
    max_length: int = DEFAULT_MAX_LENGTH,
    private_dictionary: PrivateDictionary | None = None,
) -> dict:
    """The answer of ``/instances/{id}/tags`` (mode "full"), ``?short`` or ``?simplify``.

    ``max_length`` 0 means no limit. For exact answers, pass a dataset freshly read from its
    file: elements pydicom has already converted lose their stored padding. Raises
    ValueError for an unknown mode, or when sequences are nested too deeply to be walked.
    """
    converter = _Converter(mode, max_length, private_dictionary, _Charset.of(ds))
    try:
        return converter.dataset(ds, top_level=True)
    except RecursionError:
        raise ValueError("The DICOM sequences are nested too deeply to be converted to JSON") from None


def meta_header_to_json(ds_file_meta: Dataset | None, mode: str = "full", max_length: int = DEFAULT_MAX_LENGTH) -> dict:
    """The answer of ``/instances/{id}/header``: the file meta group, without its binary elements."""
    converter = _Converter(mode, max_length, None, _Charset(), skip_binary=True)
    return {} if ds_file_meta is None else converter.dataset(ds_file_meta, top_level=False)


def parse_dictionary_option(option: Mapping[str, list]) -> dict[int, DictionaryEntry]:
    """Read Orthanc's "Dictionary" configuration option.

    ``{"0009,1001": ["DS", "MyPrivateTag", 1, 1, "PrivateCreator"]}`` gives
    ``{0x00091001: ("DS", "MyPrivateTag", "PrivateCreator")}``. As in Orthanc, an entry without
    creator names only elements without creator, and standard tags cannot be redefined.
    """
    entries = {}
    for key, spec in option.items():
        tag = _parse_tag(key)
        if not isinstance(spec, list) or len(spec) < 2 or not all(isinstance(s, str) for s in spec[:2]):
            raise ValueError(f'Bad "Dictionary" entry for {key}: expected [VR, Name, ...]')
        vr, name = spec[0].upper(), spec[1]
        if vr not in _ALL_VRS or not name:
            raise ValueError(f'Bad "Dictionary" entry for {key}: unknown VR "{spec[0]}" or empty name')
        creator = spec[4] if len(spec) > 4 and spec[4] else None
        if creator is not None and not isinstance(creator, str):
            raise ValueError(f'Bad "Dictionary" entry for {key}: the private creator must be a string')
        if not (tag >> 16) & 1 and _public_name(tag) != UNKNOWN_NAME:
            raise ValueError(f'"Dictionary" cannot redefine the standard tag {key}')
        entries[tag] = (vr, name, creator)
    return entries


def _parse_tag(key: str) -> int:
    text = key.replace(",", "").strip()
    try:
        if len(text) == 8:
            return int(text, 16)
    except ValueError:
        pass
    raise ValueError(f'Bad tag in the "Dictionary" option: "{key}"')


def _tag_key(tag: int) -> str:
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


@lru_cache(maxsize=8192)
def _public_name(tag: int) -> str:
    try:
        _vr, _vm, _name, retired, keyword = get_entry(tag)
    except KeyError:
        return "GenericGroupLength" if tag & 0xFFFF == 0 else UNKNOWN_NAME
    if not keyword:
        return UNKNOWN_NAME
    return f"RETIRED_{keyword}" if retired and tag not in _NOT_YET_RETIRED else keyword


def _private_name(tag: int) -> str:
    element = tag & 0xFFFF
    if element == 0:
        return "PrivateGroupLength"
    return "PrivateCreator" if 0x10 <= element <= 0xFF else UNKNOWN_NAME


@lru_cache(maxsize=8192)
def _dictionary_vr(tag: int, creator: str | None) -> str | None:
    """The VR the dictionaries give an element; "UN" if unknown, None if ambiguous."""
    element = tag & 0xFFFF
    if element == 0:
        return "UL"  # group lengths, public or private
    try:
        if not (tag >> 16) & 1:
            vr = dictionary_VR(tag)
        elif 0x10 <= element <= 0xFF:
            return "LO"  # private creators
        elif creator is None:
            return "UN"
        else:
            vr = private_dictionary_VR(tag, creator)
    except KeyError:
        return "UN"
    return None if " or " in vr else vr


def _creator_of(entry: tuple[str, ...]) -> str | None:
    return entry[2] if len(entry) > 2 else None


class _Charset:
    """Text decoding as Orthanc does, from the top-level SpecificCharacterSet."""

    def __init__(self, terms: list[str] | None = None) -> None:
        terms = terms or [""]
        first = terms[0]
        self.codec: str | None = "latin_1"  # Orthanc's default encoding; None: its ASCII filter
        self.extensions: list[str] | None = None
        if len(terms) > 1 or first in _ISO_2022_MULTIBYTE:
            # Code extensions: escape sequences decoded as pydicom does. Without escapes, an
            # empty first term means ASCII, whose other bytes Orthanc drops.
            self.extensions = convert_encodings(terms)
            self.codec = "ascii" if first in ("", "ISO 2022 IR 6") else python_encoding.get(first, "ascii")
        elif first in ("ISO_IR 6", "ISO 2022 IR 6"):
            self.codec = None
        elif first:
            self.codec = python_encoding.get(first)  # unknown terms fall back to ASCII

    @classmethod
    def of(cls, ds: Dataset) -> "_Charset":
        element = ds.get_item(SPECIFIC_CHARACTER_SET)
        if element is None:
            return cls()
        if isinstance(element, RawDataElement):
            text = _trim(element.value or b"", "CS").decode("latin_1")
            return cls([term.strip() for term in text.split("\\")])
        value = element.value
        terms = list(value) if isinstance(value, MultiValue | list) else [value or ""]
        return cls([str(term).strip() for term in terms])

    def decode(self, data: bytes, vr: str) -> str:
        if self.extensions is not None and b"\x1b" in data:
            if vr == "PN":
                delimiters = _PN_DELIMITERS
            else:
                delimiters = _TEXT_DELIMITERS if vr in ("LT", "ST", "UT") else _VALUE_DELIMITERS
            try:
                return decode_bytes(data, self.extensions, delimiters)
            except (LookupError, UnicodeError, ValueError):
                return data.decode("latin_1")
        if self.codec is None:
            return data.translate(None, _NOT_ASCII).decode("ascii")
        if data.isascii():
            return data.decode("ascii")
        return data.decode(self.codec, errors="ignore")  # invalid bytes are dropped, as by Orthanc


def _trim(data: bytes, vr: str) -> bytes:
    """The text DCMTK hands to Orthanc: padding removed, cut at the first NUL."""
    if data.endswith(b" ") and not len(data) % 2:
        data = data.rstrip(b" ")
    nul = data.find(b"\0")
    if nul >= 0:
        data = data[:nul]
    if vr == "UI":
        data = b"".join(data.split())
    return data


def _pixel_value_vr(ds: Dataset) -> str | None:
    element = ds.get_item(PIXEL_REPRESENTATION)
    if element is None:
        return None
    if isinstance(element, RawDataElement):
        data = element.value or b""
        if len(data) < 2:
            return None
        signed = struct.unpack("<H" if element.is_little_endian else ">H", data[:2])[0] == 1
    else:
        signed = element.value == 1
    return "SS" if signed else "US"


def _raw_bytes(ds: Dataset, element: RawDataElement) -> bytes | None:
    """The stored bytes of an element, read from the file if pydicom deferred them."""
    if element.value is not None or not element.length:
        return element.value or b""
    source = getattr(ds, "buffer", None) or getattr(ds, "filename", None)
    if source is None or getattr(source, "closed", False):
        return None
    try:
        return read_deferred_data_element(ds.fileobj_type, source, ds.timestamp, element).value
    except (OSError, ValueError):
        return None


def _format_number(value: object) -> str:
    if isinstance(value, float):
        return "%.17g" % value
    if isinstance(value, BaseTag):
        return f"{value.group:04x},{value.element:04x}"
    return str(value)


def _original_text(value: object) -> str:
    original = getattr(value, "original_string", None)
    text = original if isinstance(original, str) else "" if value is None else str(value)
    return text.split("\0", 1)[0]


class _Converter:
    """One conversion: the mode, the limits and the character set of the dataset."""

    def __init__(
        self,
        mode: str,
        max_length: int,
        dictionary: PrivateDictionary | None,
        charset: _Charset,
        skip_binary: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Unknown DICOM-as-JSON mode: {mode!r} (expected one of {', '.join(MODES)})")
        self.mode = mode
        self.max_length = max_length
        self.dictionary = dictionary or {}
        self.charset = charset
        self.skip_binary = skip_binary

    def dataset(self, ds: Dataset, top_level: bool) -> dict:
        result: dict = {}
        creators: dict[int, str | None] = {}
        for tag in sorted(map(int, ds.keys())):  # plain ints compare faster than BaseTags
            if top_level and tag > PIXEL_DATA:
                break  # Orthanc stops after the pixel data
            creator = self._creator(ds, tag, creators)
            entry = self._declared(tag, creator)
            kind, value = self._value(ds, tag, creator, entry)
            if kind == "Null" and self.skip_binary:
                continue
            if self.mode == "short":
                result[_tag_key(tag)] = value
                continue
            name = entry[1] if entry else _private_name(tag) if (tag >> 16) & 1 else _public_name(tag)
            if self.mode == "simplify":
                result[name] = value  # the last element of a name wins, as in Orthanc
                continue
            item: dict = {"Name": name}
            if creator is not None and kind != "Sequence":
                item["PrivateCreator"] = creator
            item["Type"] = kind
            item["Value"] = value
            result[_tag_key(tag)] = item
        return dict(sorted(result.items())) if self.mode == "simplify" else result

    def _declared(self, tag: int, creator: str | None) -> tuple[str, ...] | None:
        """The site's "Dictionary" entry that names an element: same creator, or both none."""
        entry = self.dictionary.get(tag)
        return entry if entry is not None and _creator_of(entry) == creator else None

    def _creator(self, ds: Dataset, tag: int, creators: dict[int, str | None]) -> str | None:
        group, element = tag >> 16, tag & 0xFFFF
        if not group & 1 or element < 0x1000:
            return None
        creator_tag = (group << 16) | (element >> 8)
        if creator_tag not in creators:
            creators[creator_tag] = None
            if creator_tag in ds:
                kind, value = self._value(ds, creator_tag, None, None)
                creators[creator_tag] = value if kind == "String" else None
        return creators[creator_tag]

    def _value(
        self, ds: Dataset, tag: int, creator: str | None, entry: tuple[str, ...] | None
    ) -> tuple[str, object]:
        """The Orthanc type of an element ("String", "Null", "TooLong", "Sequence"), and its value."""
        if tag in _DICOMDIR_OFFSETS:
            return "Null", None
        element = ds.get_item(tag, keep_deferred=True)  # never read the pixel data
        if isinstance(element, RawDataElement):
            vr = element.VR
            if vr is None or element.is_implicit_VR:
                vr = self._implicit_vr(ds, tag, creator, entry)
            if vr == "UN" and element.length == UNDEFINED_LENGTH:
                vr = "SQ"  # an undefined length can only hold items
            elif vr == "UN":
                known_vr = entry[0] if entry else _dictionary_vr(tag, creator)
                return self._unknown_vr_value(_raw_bytes(ds, element), known_vr)
            if vr is None or vr in _BINARY_VRS:
                return "Null", None
            data = None if vr == "SQ" else _raw_bytes(ds, element)
            if data is not None:
                return self._raw_value(data, vr, element.is_little_endian)
        elif element is None or element.VR in _BINARY_VRS or tag == PIXEL_DATA:
            return "Null", None
        try:
            converted = ds[tag]  # sequences, deferred values, elements built in memory
        except Exception:  # noqa: BLE001 - a value pydicom cannot read is shown as null
            return "Null", None
        return self._converted_value(converted)

    def _implicit_vr(self, ds: Dataset, tag: int, creator: str | None, entry: tuple[str, ...] | None) -> str | None:
        if entry is None:  # DCMTK also reads an implicit element with a creator-less entry's VR
            entry = self.dictionary.get(tag)
            entry = entry if entry is not None and _creator_of(entry) is None else None
        if entry is not None:
            return entry[0]
        vr = _dictionary_vr(tag, creator)
        return _pixel_value_vr(ds) if vr is None and tag in _PIXEL_VALUE_TAGS else vr

    def _unknown_vr_value(self, data: bytes | None, known_vr: str | None) -> tuple[str, object]:
        """An explicit UN is shown only if the dictionary knows it as text, and then verbatim."""
        if known_vr not in _TEXT_VRS or data is None:
            return "Null", None
        nul = data.find(b"\0")
        return self._text(self.charset.decode(data if nul < 0 else data[:nul], known_vr))

    def _raw_value(self, data: bytes, vr: str, little_endian: bool) -> tuple[str, object]:
        if vr in _TEXT_VRS:
            return self._text(self.charset.decode(_trim(data, vr), vr))
        fmt = _NUMBER_FORMATS.get(vr)
        if fmt is None:
            return "Null", None
        if len(data) % 2:
            data += b"\0"  # DCMTK pads odd lengths
        count = len(data) // struct.calcsize("<" + fmt)
        if count == 0:
            return "Null", None
        if vr != "AT" and self.max_length and 2 * count - 1 > self.max_length:
            return "TooLong", None  # a number takes a character and a separator, at least
        numbers = struct.unpack_from(("<" if little_endian else ">") + fmt * count, data)
        if vr == "AT":
            return self._text(f"{numbers[0]:04x},{numbers[1]:04x}")
        return self._text("\\".join(map(_format_number, numbers)))

    def _converted_value(self, element: DataElement) -> tuple[str, object]:
        """The value of an element pydicom has already converted, or that was built in memory."""
        vr, value = element.VR, element.value
        if vr == "SQ":
            items = value if isinstance(value, Sequence | list) else []
            return "Sequence", [self.dataset(item, top_level=False) for item in items]
        if vr in _BINARY_VRS or isinstance(value, bytes | bytearray) or " or " in vr:
            return "Null", None
        values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        if vr in _NUMBER_FORMATS:
            values = [v for v in values if v is not None][: 1 if vr == "AT" else None]
            return self._text("\\".join(map(_format_number, values))) if values else ("Null", None)
        return self._text("\\".join(_original_text(v) for v in values))

    def _text(self, text: str) -> tuple[str, object]:
        limit = self.max_length
        if limit and len(text) > limit // 4:  # a character takes 4 bytes at most in UTF-8
            size = len(text) if text.isascii() else len(text.encode("utf-8", errors="replace"))
            if size > limit:
                return "TooLong", None
        return "String", text
