"""A lean reader of the common DICOM file: a preamble, a meta header and a dataset in explicit
or implicit VR little endian (uncompressed or encapsulated), walked with struct on the bytes.

It builds the very FileDataset that ``pydicom.dcmread`` builds from such a file (same raw
elements and positions, file meta, character set), in a fraction of the time, and answers None
for anything else, which is then left to pydicom: no preamble, deflated or big endian syntaxes,
unknown VRs, command elements, elements out of order, lengths past the end, trailing bytes...

One choice differs from pydicom: a sequence of undefined length is kept raw, as pydicom keeps
those of defined length, and is decoded on first access (by pydicom's ``convert_SQ``, from the
same bytes at the same positions) rather than while reading the file. Its structure is walked
here as pydicom would read it, so that it ends where pydicom ends it; files where the lazy
decoding could give other values than pydicom's eager read are left to pydicom.
"""

import io
from collections.abc import Callable
from functools import lru_cache, partial
from struct import Struct
from typing import TypeVar

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR, EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_string

# Group, element, and the next 4 bytes: an implicit VR length, or an explicit VR and 16-bit length.
HEADER = Struct("<HHL").unpack_from
LONG_LENGTH = Struct("<L").unpack_from

PREAMBLE_END = 128
DATASET_START = 132  # after the preamble and "DICM"
UNDEFINED_LENGTH = 0xFFFFFFFF
DELIMITER_GROUP = 0xFFFE
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
ITEM_BYTES = b"\xfe\xff\x00\xe0"
SEQUENCE_DELIMITER_BYTES = b"\xfe\xff\xdd\xe0"
META_GROUP = b"\x02\x00"
LAST_META_TAG = 0x0002FFFF
GROUP_LENGTH = BaseTag(0x00020000)
TRANSFER_SYNTAX = BaseTag(0x00020010)
SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
MAX_CACHED_LENGTH = 64  # of converted values kept: UIDs, character sets, group lengths
MAX_NESTING = 64  # deeper, pydicom fails on recursion: its own path reports it

VRS = {int.from_bytes(vr.encode(), "little"): str(vr) for vr in VR if len(vr) == 2}  # by their 16-bit code
LONG_LENGTH_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
# Public tags that pydicom reads as US or SS depending on the Pixel Representation.
US_OR_SS_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if "SS" in entry[0] and " or " in entry[0])
# Read by pydicom as explicit VR little endian with no other step (not inflated first).
EXPLICIT_SYNTAXES = frozenset(
    {ExplicitVRLittleEndian}
    | {syntax for syntax in AllTransferSyntaxes if syntax.is_encapsulated and not syntax.is_deflated}
)


T = TypeVar("T")


class Unusual(Exception):
    """A file outside the common case: pydicom reads it."""


def read_common_file(data: bytes) -> FileDataset | None:
    """What ``pydicom.dcmread`` reads from `data` if the file is of the common case, else None."""
    try:
        return _read(data)
    except Unusual:
        return None


def _read(data: bytes) -> FileDataset:
    if data[PREAMBLE_END:DATASET_START] != b"DICM":
        raise Unusual("no preamble")
    meta_elements, start = _meta_elements(data)
    meta = _new(FileMetaDataset, META_STATE, meta_elements)
    implicit = _implicit_syntax(meta)
    if start == len(data) or _looks_implicit(data, start) != implicit:
        raise Unusual("no dataset, or one whose first element is not in the announced encoding")
    walker = _Walker(data)
    dataset = _new(FileDataset, FILE_STATES[implicit], walker.top_level(start, implicit))
    vars(dataset).update(preamble=data[:PREAMBLE_END], file_meta=meta, buffer=io.BytesIO(data))
    _set_character_set(dataset, walker)
    return dataset


def _set_character_set(dataset: FileDataset, walker: "_Walker") -> None:
    """As pydicom's reader: the Specific Character Set converted, its codecs recorded. pydicom
    decodes a sequence while reading with the character set seen so far, converted its own way;
    one kept raw is decoded with the dataset's: both must be the same."""
    raw = dataset._dict.get(SPECIFIC_CHARACTER_SET)
    if raw is not None:
        _convert(dataset, SPECIFIC_CHARACTER_SET)
    vars(dataset)["_read_charset"] = _by_pydicom(lambda: dataset._character_set)
    if walker.raw_sequences and raw is not None:
        while_reading = _by_pydicom(lambda: convert_encodings(convert_string(raw.value or b"", True)))
        if walker.sequence_before_charset or while_reading != dataset._read_charset:
            raise Unusual("sequence read with another character set by pydicom")


def _by_pydicom(conversion: Callable[[], T]) -> T:
    """A conversion by pydicom: if it fails, the file is left to pydicom, which reports it."""
    try:
        return conversion()
    except Exception as exc:  # noqa: BLE001 - whatever pydicom makes of a bad value
        raise Unusual(f"value that pydicom cannot convert: {exc}") from exc


def _meta_elements(data: bytes) -> tuple[dict[BaseTag, RawDataElement], int]:
    """The group 0002 elements (explicit VR little endian), and where the dataset starts."""
    elements: dict[BaseTag, RawDataElement] = {}
    pos, previous = DATASET_START, -1
    while data[pos : pos + 2] == META_GROUP:
        tag, vr, length, value_pos = _explicit_header(data, pos)
        if tag <= previous or length == UNDEFINED_LENGTH:
            raise Unusual("meta elements out of order, or of undefined length")
        key = BaseTag(tag)
        elements[key] = _raw(data, key, vr, length, value_pos, False)
        pos, previous = value_pos + length, tag
    if not elements:
        raise Unusual("no meta header")
    return elements, pos


def _implicit_syntax(meta: FileMetaDataset) -> bool:
    """Whether the dataset is implicit VR, per its transfer syntax. As pydicom, this converts the
    first meta element (its check of the meta encoding), the group length and the syntax."""
    _convert(meta, next(iter(meta._dict)))
    if GROUP_LENGTH in meta._dict:
        _convert(meta, GROUP_LENGTH)
    syntax = _convert(meta, TRANSFER_SYNTAX).value if TRANSFER_SYNTAX in meta._dict else None
    if syntax == ImplicitVRLittleEndian:
        return True
    if isinstance(syntax, str) and syntax in EXPLICIT_SYNTAXES:  # not several values
        return False
    raise Unusual("transfer syntax")


def _convert(dataset: Dataset, tag: BaseTag) -> DataElement:
    """What ``dataset[tag]`` does to the elements that pydicom's reader converts: of the meta
    header, and the Specific Character Set (plain elements, converted with its default character set)."""
    element = dataset._dict[tag]
    if isinstance(element, DataElement):
        return element  # the first meta element is also the group length
    converted = _by_pydicom(lambda: _conversion(element))
    if converted.VR == "SQ" or converted.VR in AMBIGUOUS_VR:
        raise Unusual("element that pydicom converts in more steps")
    dataset._dict[tag] = converted
    return converted


def _conversion(element: RawDataElement) -> DataElement:
    """A raw element converted by pydicom. The same short values recur from file to file: they
    are converted once, and copied (unless mutable: several values)."""
    if element.length <= MAX_CACHED_LENGTH:
        converted = _cached_conversion(element)
        if not isinstance(converted.value, MultiValue):
            copy = DataElement.__new__(DataElement)
            copy.__dict__.update(converted.__dict__)
            return copy
    return convert_raw_data_element(element, encoding=default_encoding)


@lru_cache(maxsize=1024)
def _cached_conversion(element: RawDataElement) -> DataElement:
    return convert_raw_data_element(element, encoding=default_encoding)


def _looks_implicit(data: bytes, pos: int) -> bool:
    """pydicom's guess of the encoding of a dataset: the VR of an explicit element is two capitals."""
    vr = data[pos + 4 : pos + 6]
    return len(vr) < 2 or not (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B)


def _explicit_header(data: bytes, pos: int) -> tuple[int, str, int, int]:
    """Tag, VR, length and value position of an explicit VR element."""
    if pos + 8 > len(data):
        raise Unusual("header cut short")
    group, number, word = HEADER(data, pos)
    vr = VRS.get(word & 0xFFFF)
    if vr is None:
        raise Unusual("unknown VR")  # pydicom takes it for implicit VR, or for a 16-bit length
    if vr not in LONG_LENGTH_VRS:
        return group << 16 | number, vr, word >> 16, pos + 8
    if pos + 12 > len(data):
        raise Unusual("header cut short")
    return group << 16 | number, vr, LONG_LENGTH(data, pos + 8)[0], pos + 12


def _raw(data: bytes, tag: BaseTag, vr: str | None, length: int, pos: int, implicit: bool) -> RawDataElement:
    """An element of defined length as pydicom reads it (an empty value is pydicom's empty value)."""
    if length == 0:
        return RawDataElement(tag, vr, 0, empty_value_for_VR(vr, raw=True), pos, implicit, True)
    end = pos + length
    if end > len(data):
        raise Unusual("value past the end of the file")
    return RawDataElement(tag, vr, length, data[pos:end], pos, implicit, True)


class _Walker:
    """Walks the elements of a file, and finds where its undefined-length values end, reading
    them as pydicom does: sequences item by item and element by element (nested undefined
    lengths too), encapsulated values fragment by fragment."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.raw_sequences = False  # whether sequences are kept raw, that pydicom decodes while reading
        self.sequence_before_charset = False

    def top_level(self, pos: int, implicit: bool) -> dict[BaseTag, RawDataElement]:
        """The elements of the dataset. This is the hot loop: _explicit_header and _raw are inlined."""
        data, size = self.data, len(self.data)
        # RawDataElement(tag, vr, length, value, position, implicit, little endian) without the
        # call of its __new__, that takes a third of the time: with its defaults is_raw, is_buffered.
        new_raw = partial(tuple.__new__, RawDataElement)
        elements: dict[BaseTag, RawDataElement] = {}
        previous = LAST_META_TAG  # command (0000) and meta (0002) elements are left to pydicom
        while pos < size:
            if pos + 8 > size:
                raise Unusual("header cut short")
            group, number, length = HEADER(data, pos)
            if implicit:
                vr = None
                pos += 8
            else:
                vr = VRS.get(length & 0xFFFF)
                if vr is None:
                    raise Unusual("unknown VR")
                if vr in LONG_LENGTH_VRS:
                    if pos + 12 > size:
                        raise Unusual("header cut short")
                    length = LONG_LENGTH(data, pos + 8)[0]
                    pos += 12
                else:
                    length >>= 16
                    pos += 8
            tag = group << 16 | number
            if tag <= previous or group == DELIMITER_GROUP:
                raise Unusual("element out of order, or a delimiter")
            previous = tag
            tag = BaseTag(tag)
            if length == UNDEFINED_LENGTH:
                elements[tag], pos = self._undefined_length(tag, vr, pos, implicit)
            elif length:
                end = pos + length
                if end > size:
                    raise Unusual("value past the end of the file")
                elements[tag] = new_raw((tag, vr, length, data[pos:end], pos, implicit, True, True, False))
                pos = end
            else:
                elements[tag] = RawDataElement(tag, vr, 0, empty_value_for_VR(vr, raw=True), pos, implicit, True)
        return elements

    def _undefined_length(self, tag: BaseTag, vr: str | None, pos: int, implicit: bool) -> tuple[RawDataElement, int]:
        vr = self._undefined_length_vr(tag, vr, pos)
        if vr == "SQ":
            if implicit and not _is_public_sequence(tag):
                # Raw, dicom_json would take its VR from the private dictionaries; pydicom reads a sequence.
                raise Unusual("implicit VR sequence of a tag that the dictionary does not know")
            end = value_end = self._sequence_end(pos, implicit, 1)
            # The delimiter is kept: pydicom peeks past an empty last item.
            self.raw_sequences = True
            self.sequence_before_charset |= tag < SPECIFIC_CHARACTER_SET
        else:
            end = self._fragments_end(pos)
            value_end = end - 8
        return RawDataElement(tag, vr, UNDEFINED_LENGTH, self.data[pos:value_end], pos, implicit, True), end

    def _undefined_length_vr(self, tag: int, vr: str | None, pos: int) -> str | None:
        """The VR pydicom reads an undefined-length value with."""
        if vr == "UN":
            return "SQ"  # it can only hold items (PS3.5 6.2.2)
        if vr is not None:
            return vr
        try:
            return dictionary_VR(tag)
        except KeyError:
            return "SQ" if self.data[pos : pos + 4] == ITEM_BYTES else None

    def _sequence_end(self, pos: int, implicit: bool, depth: int) -> int:
        """Where the sequence whose items start at `pos` ends, after its delimiter."""
        if depth > MAX_NESTING:
            raise Unusual("sequences nested too deeply")
        while True:
            tag, length, pos = self._item_header(pos)
            if tag == SEQUENCE_DELIMITER:
                return pos
            if tag != ITEM:
                raise Unusual("sequence that holds something else than items")
            pos = self._item_end(pos, None if length == UNDEFINED_LENGTH else pos + length, implicit, depth)

    def _fragments_end(self, pos: int) -> int:
        """Where an encapsulated value ends, after its delimiter (pydicom scans one that is not a
        list of items for the bytes of a delimiter: that case is left to it)."""
        data = self.data
        while data[pos : pos + 4] == ITEM_BYTES and pos + 8 <= len(data):
            pos += 8 + LONG_LENGTH(data, pos + 4)[0]
        if data[pos : pos + 4] != SEQUENCE_DELIMITER_BYTES:
            raise Unusual("encapsulated value that is not a list of items")
        return self._item_header(pos)[2]

    def _item_header(self, pos: int) -> tuple[int, int, int]:
        """Tag, length and end of an item or delimiter header."""
        if pos + 8 > len(self.data):
            raise Unusual("sequence cut short")
        group, number, length = HEADER(self.data, pos)
        tag = group << 16 | number
        if tag != ITEM and length:
            raise Unusual("delimiter of non-zero length")
        return tag, length, pos + 8

    def _item_end(self, pos: int, stop: int | None, implicit: bool, depth: int) -> int:
        """Where the elements of an item end: its length must hold them exactly, else its delimiter
        ends it. pydicom reads an explicit VR item whose first element looks implicit as implicit
        (as the items of unknown-VR sequences are)."""
        data = self.data
        end = len(data) if stop is None else stop
        if end > len(data):
            raise Unusual("item past the end of the file")
        implicit = implicit or (pos != stop and _looks_implicit(data, pos))
        while pos != stop:
            if pos + 8 > end:
                raise Unusual("item cut short")
            group, number, length = HEADER(data, pos)
            tag = group << 16 | number
            if group == DELIMITER_GROUP:
                if tag != ITEM_DELIMITER or length or stop is not None:
                    raise Unusual("misplaced delimiter")
                return pos + 8
            if implicit:
                vr, pos = None, pos + 8
            else:
                tag, vr, length, pos = _explicit_header(data, pos)
            if (vr is None or vr == "UN") and tag in US_OR_SS_TAGS:
                # Its VR comes on conversion from the Pixel Representation of its dataset or of
                # the parents, which pydicom only passes down to lazily decoded sequences.
                raise Unusual("US or SS element in a sequence")
            if length != UNDEFINED_LENGTH:
                pos += length
            elif self._undefined_length_vr(tag, vr, pos) == "SQ":
                pos = self._sequence_end(pos, implicit, depth + 1)
            else:
                pos = self._fragments_end(pos)
        return pos


def _is_public_sequence(tag: BaseTag) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _new(cls: type[Dataset], state: dict, elements: dict) -> Dataset:
    """A dataset as pydicom's reader makes it, without the checks of its constructor and setters."""
    dataset = cls.__new__(cls)
    vars(dataset).update((name, value.copy() if isinstance(value, dict | list) else value) for name, value in state.items())
    vars(dataset)["_dict"] = elements
    return dataset


def _state(dataset: Dataset, *per_file: str) -> dict:
    return {name: value for name, value in vars(dataset).items() if name not in ("_dict", *per_file)}


def _meta_state() -> dict:
    """The attributes pydicom's reader gives a file meta dataset (_read_file_meta_info)."""
    meta = FileMetaDataset()
    meta.set_original_encoding(is_implicit_vr=False, is_little_endian=True, character_encoding=default_encoding)
    return _state(meta)


def _file_state(implicit: bool) -> dict:
    """The attributes pydicom's reader gives a file dataset (read_partial), but those set per file."""
    dataset = FileDataset(io.BytesIO(), Dataset(), None, FileMetaDataset(), implicit, True)
    dataset.set_original_encoding(implicit, True, None)
    return _state(dataset, "preamble", "file_meta", "buffer", "_read_charset")


META_STATE = _meta_state()
FILE_STATES = {implicit: _file_state(implicit) for implicit in (False, True)}
