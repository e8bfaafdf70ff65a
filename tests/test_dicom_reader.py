"""The lean reader of common DICOM files must read exactly what pydicom reads, or leave the file
to pydicom: compared on every sample file, on truncated and on corrupted copies."""

import io
import random
from functools import partial

import pydicom
import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from conftest import SAMPLES, sample
from isengard.dicom import parse
from isengard.dicom.dicom_json import dataset_to_json, meta_header_to_json
from isengard.dicom.parse import parse_instance
from isengard.dicom.reader import read_common_file
from isengard.errors import ErrorCode, IsengardError

# As parse.py sets it on import (pytest's capture of warnings undoes it): a truncated
# encapsulated value is an error, not a warning.
pytestmark = pytest.mark.filterwarnings("error:End of file reached before delimiter:UserWarning")

SAMPLE_FILES = sorted(str(path.relative_to(SAMPLES)) for path in SAMPLES.rglob("*") if path.is_file())
UNDEFINED_LENGTH = 0xFFFFFFFF
# Sample files of the common case, of each kind.
COMMON_FILES = [
    "TransferSyntaxes/1.2.840.10008.1.2.1.dcm",  # explicit VR little endian
    "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm",  # encapsulated
    "TransferSyntaxes/1.2.840.10008.1.2.5.dcm",  # RLE
    "Brainix/Flair/IM-0001-0001.dcm",  # implicit VR little endian
    "Encodings/Lena-latin1.dcm",
]
# Attributes that pydicom sets on first access of a sequence item kept raw, not when reading it.
LAZY_ONLY_ATTRIBUTES = {"_pixel_rep"}
POSITIONS = {"file_tell", "seq_item_tell"}


def pydicom_read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def outcome(function, *args):  # type: ignore[no-untyped-def]
    """A result, or the exception it raised (type and message, comparable)."""
    try:
        return function(*args)
    except Exception as exc:  # noqa: BLE001 - both paths must fail alike, whatever the failure
        return type(exc), str(exc)


def attributes(dataset: Dataset, *ignored: str) -> dict:
    return {name: value for name, value in vars(dataset).items() if name not in ("_dict", *ignored)}


def item_attributes(item: Dataset, *ignored: str) -> dict:
    """The attributes of a sequence item, its character sets as lists: pydicom passes a lone
    one in a list to the items it decodes lazily, as is to those it reads with the file."""
    found = attributes(item, *ignored)
    for name in ("_parent_encoding", "_read_charset"):
        if isinstance(found.get(name), str):
            found[name] = [found[name]]
    return found


def assert_same_element(actual: RawDataElement | DataElement, expected: RawDataElement | DataElement) -> None:
    """Raw with the same fields (value, position...), or converted alike."""
    assert type(actual) is type(expected), expected.tag
    if isinstance(expected, DataElement):
        assert vars(actual) == vars(expected), expected.tag
    else:
        assert actual == expected, expected.tag


def assert_same_raw_elements(lean: Dataset, expected: Dataset) -> None:
    """Same elements in the same order, as raw as pydicom leaves them."""
    assert list(lean._dict) == list(expected._dict)
    for tag, element in expected._dict.items():
        actual = lean._dict[tag]
        if isinstance(element, DataElement) and element.VR == "SQ" and isinstance(actual, RawDataElement):
            # Decoded by pydicom while reading the file, kept raw by the lean reader.
            assert element.is_undefined_length
            assert (actual.VR, actual.length, actual.value_tell) == ("SQ", UNDEFINED_LENGTH, element.file_tell)
        else:
            assert_same_element(actual, element)


def assert_same_values(lean: Dataset, expected: Dataset, where: str = "", positions: bool = True) -> None:
    """Same values once converted, sequences item by item. The positions of what the items hold
    are not compared in sequences the lean reader kept raw: pydicom decodes a raw sequence from
    its own bytes (as those of defined length it keeps raw), giving positions from there."""
    assert list(lean.keys()) == list(expected.keys()), where
    for tag in expected.keys():
        kept_raw = isinstance(lean._dict[tag], RawDataElement) and not isinstance(expected._dict[tag], RawDataElement)
        actual, element = outcome(lean.__getitem__, tag), outcome(expected.__getitem__, tag)
        path = f"{where}{tag}"
        if not isinstance(element, DataElement):
            assert actual == element, path  # the same failure
            continue
        assert (actual.VR, actual.is_undefined_length) == (element.VR, element.is_undefined_length), path
        assert not positions or actual.file_tell == element.file_tell, path
        if element.VR != "SQ":
            assert type(actual.value) is type(element.value), path
            assert actual.value == element.value or repr(actual.value) == repr(element.value), path  # NaN
            continue
        assert len(actual.value) == len(element.value), path
        inner_positions = positions and not kept_raw  # the items' own positions are right
        ignored = LAZY_ONLY_ATTRIBUTES if positions else LAZY_ONLY_ATTRIBUTES | POSITIONS
        for index, (lean_item, expected_item) in enumerate(zip(actual.value, element.value, strict=True)):
            item_path = f"{path}[{index}]."
            assert item_attributes(lean_item, *ignored) == item_attributes(expected_item, *ignored), item_path
            assert_same_values(lean_item, expected_item, item_path, inner_positions)


def assert_same_file_meta(lean: Dataset, expected: Dataset) -> None:
    assert list(lean.file_meta._dict) == list(expected.file_meta._dict)
    for tag, element in expected.file_meta._dict.items():
        assert_same_element(lean.file_meta._dict[tag], element)
    assert attributes(lean.file_meta) == attributes(expected.file_meta)


def parsed(data: bytes, monkeypatch: pytest.MonkeyPatch, lean: bool) -> object:
    """What parse_instance makes of a file, through the lean reader or through pydicom alone:
    the instance, or the error it raises."""
    with monkeypatch.context() as patch:
        if not lean:
            patch.setattr(parse, "read_common_file", lambda data: None)
        try:
            instance = parse_instance(data)
            return {
                "identifiers": instance.identifiers,
                "main_tags": instance.main_tags,
                "transfer_syntax": instance.transfer_syntax,
                "pixel_data_offset": instance.pixel_data_offset,
                "index_in_series": instance.index_in_series,
                "sop_class_uid": instance.sop_class_uid,
                "expected_number_of_instances": instance.expected_number_of_instances,
                "charset": instance.charset,
            }
        except IsengardError as error:
            return error.code, error.details
        except Exception as exc:  # noqa: BLE001 - what pydicom raises past parse_instance, alike
            return type(exc), str(exc)


def assert_same_read(data: bytes, lean: Dataset, expected: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    assert type(lean) is type(expected)
    assert_same_raw_elements(lean, expected)
    assert_same_file_meta(lean, expected)
    assert attributes(lean, "file_meta", "buffer") == attributes(expected, "file_meta", "buffer")
    assert lean.buffer.getvalue() == data
    assert_same_values(lean, expected)
    assert parsed(data, monkeypatch, lean=True) == parsed(data, monkeypatch, lean=False)


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_lean_read_equals_pydicom_read(name, monkeypatch):
    data = sample(name).read_bytes()
    lean = read_common_file(data)
    expected = outcome(pydicom_read, data)
    if lean is None:
        return  # left to pydicom
    assert isinstance(expected, Dataset), f"the lean reader accepts what pydicom refuses: {expected}"
    assert_same_read(data, lean, expected, monkeypatch)


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_lean_read_converts_to_the_same_json(name):
    data = sample(name).read_bytes()
    if read_common_file(data) is None:
        return
    # Each conversion on a fresh read: converting a value changes what dicom_json sees.
    for convert in (dataset_to_json, lambda ds: meta_header_to_json(ds.file_meta), lambda ds: ds.to_json_dict()):
        assert outcome(convert, read_common_file(data)) == outcome(convert, pydicom_read(data))


def test_common_files_are_read_by_the_lean_reader():
    for name in COMMON_FILES:
        assert read_common_file(sample(name).read_bytes()) is not None, name


@pytest.mark.parametrize(
    "name",
    [
        "TransferSyntaxes/1.2.840.10008.1.2.dcm",  # no preamble
        "TransferSyntaxes/1.2.840.10008.1.2.2.dcm",  # big endian
        "TransferSyntaxes/1.2.840.10008.1.2.1.99.dcm",  # deflated
    ],
)
def test_other_files_are_left_to_pydicom(name):
    assert read_common_file(sample(name).read_bytes()) is None


def written(dataset: Dataset, implicit: bool) -> bytes:
    """A file of `dataset`, written by pydicom."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(dataset, keyword, generate_uid())
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def undefined_length(tag: int, items: list[Dataset]) -> DataElement:
    element = DataElement(tag, "SQ", Sequence(items))
    element.is_undefined_length = True
    return element


def replaced(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


def item(**elements: object) -> Dataset:
    dataset = Dataset()
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    return dataset


def nested_sequences(implicit: bool) -> bytes:
    """Sequences of undefined length in items, empty items, encapsulated pixel data in an item."""
    referenced = item(SpecificCharacterSet="ISO_IR 100", PatientName="Müller")
    referenced.add(undefined_length(0x00081199, [item(ReferencedSOPInstanceUID="1.2.3"), Dataset()]))
    icon = item(Rows=1, Columns=1)
    icon.add(DataElement(0x7FE00010, "OB", b"\xfe\xff\x00\xe0\0\0\0\0\xfe\xff\x00\xe0\x02\0\0\0\x01\x02"))
    icon[0x7FE00010].is_undefined_length = True
    dataset = item(SpecificCharacterSet="ISO_IR 100", PatientName="Zoë", PixelRepresentation=1)
    dataset.add(undefined_length(0x00081140, [referenced, item(ReferencedSOPInstanceUID="1.2"), Dataset()]))
    dataset.add(undefined_length(0x00400275, [Dataset()]))  # its last item is empty
    dataset.add(undefined_length(0x00880200, [icon]))
    return written(dataset, implicit)


def unknown_vr_sequence() -> bytes:
    """An explicit VR file with a sequence stored as of unknown VR, its items in implicit VR (PS3.5 6.2.2)."""
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, item(PatientName="A^B", ReferencedSOPInstanceUID="1.2"))
    dataset = item(PatientName="X")
    dataset.add_new(0x00090010, "LO", "ACME")
    dataset.add_new(0x00091001, "UN", b"PLACEHOLDER!")
    sequence = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + body.getvalue() + b"\xfe\xff\x0d\xe0\0\0\0\0\xfe\xff\xdd\xe0\0\0\0\0"
    placeholder = b"\x09\x00\x01\x10UN\0\0\x0c\0\0\0PLACEHOLDER!"
    return replaced(written(dataset, implicit=False), placeholder, b"\x09\x00\x01\x10UN\0\0\xff\xff\xff\xff" + sequence)


@pytest.mark.parametrize("make", [partial(nested_sequences, False), partial(nested_sequences, True), unknown_vr_sequence])
def test_sequences_of_undefined_length_decode_as_pydicom_reads_them(make, monkeypatch):
    data = make()
    lean = read_common_file(data)
    assert lean is not None
    assert_same_read(data, lean, pydicom_read(data), monkeypatch)
    for convert in (dataset_to_json, lambda ds: ds.to_json_dict()):
        assert outcome(convert, read_common_file(data)) == outcome(convert, pydicom_read(data))


def private_sequence() -> bytes:
    """pydicom reads it as a sequence; kept raw, dicom_json would take its VR from the dictionaries."""
    dataset = item(PatientName="A")
    dataset.add_new(0x00090010, "LO", "ACME")
    dataset.add(undefined_length(0x00091001, [item(PatientID="1")]))
    return written(dataset, implicit=True)


def ambiguous_element_in_sequence() -> bytes:
    """pydicom reads it as US; decoded lazily, it would become SS per the parent's PixelRepresentation."""
    referenced = Dataset()
    referenced.add_new(0x00280106, "US", 65535)  # SmallestImagePixelValue, "US or SS"
    dataset = item(PixelRepresentation=1)
    dataset.add(undefined_length(0x00081140, [referenced]))
    return written(dataset, implicit=True)


def sequence_before_character_set() -> bytes:
    """pydicom reads it with its default character set, not yet knowing the file's."""
    dataset = item(SpecificCharacterSet="ISO_IR 192")
    dataset.add(undefined_length(0x00041220, [item(PatientName="Zoë")]))
    return written(dataset, implicit=False)


def character_set_of_another_vr() -> bytes:
    """pydicom splits the terms of a Specific Character Set while reading, whatever its VR; not when converting an LT."""
    dataset = item(SpecificCharacterSet=["ISO 2022 IR 6", "ISO 2022 IR 100"])
    dataset.add(undefined_length(0x00081140, [item(PatientName="Zoë")]))
    return replaced(written(dataset, implicit=False), b"\x08\x00\x05\x00CS", b"\x08\x00\x05\x00LT")


@pytest.mark.parametrize(
    "make", [private_sequence, ambiguous_element_in_sequence, sequence_before_character_set, character_set_of_another_vr]
)
def test_sequences_that_would_decode_otherwise_are_left_to_pydicom(make):
    data = make()
    assert isinstance(pydicom_read(data), Dataset)
    assert read_common_file(data) is None


def test_values_that_pydicom_cannot_convert_are_left_to_it(monkeypatch):
    """A Specific Character Set stored as an attribute tag: pydicom fails to read the file."""
    data = replaced(written(item(SpecificCharacterSet="ISO_IR 100"), False), b"\x08\x00\x05\x00CS", b"\x08\x00\x05\x00AT")
    assert read_common_file(data) is None
    refused = parsed(data, monkeypatch, lean=True)
    assert refused[0] == ErrorCode.BAD_FILE_FORMAT
    assert refused == parsed(data, monkeypatch, lean=False)


def element_cuts(data: bytes) -> list[int]:
    """Cuts within the top-level elements: in the value of each raw one, and in the header of
    each that follows a raw one (pydicom checks the end of the last one it read, if raw)."""
    cuts = []
    previous = None
    for element in pydicom_read(data)._dict.values():
        if isinstance(element, RawDataElement):
            if isinstance(previous, RawDataElement):
                cuts.append(element.value_tell - 2)
            if element.length not in (0, UNDEFINED_LENGTH):
                cuts.append(element.value_tell + element.length // 2)
        previous = element
    return cuts


# Files cut short or corrupted: samples of each kind, and with sequences of undefined length.
SYNTHETIC_FILES = {
    "nested sequences, explicit VR": partial(nested_sequences, False),
    "nested sequences, implicit VR": partial(nested_sequences, True),
    "sequence of unknown VR": unknown_vr_sequence,
}
DAMAGED_FILES = [*COMMON_FILES[:4], "HierarchicalAnonymization/StructuredReports/IM0", *SYNTHETIC_FILES]


def damaged_file(name: str) -> tuple[bytes, int]:
    """A file to damage, and where its pixel data starts (its end if it has none)."""
    data = SYNTHETIC_FILES[name]() if name in SYNTHETIC_FILES else sample(name).read_bytes()
    pixel_data = pydicom_read(data)._dict.get(0x7FE00010)
    return data, len(data) if pixel_data is None else pixel_data.value_tell


@pytest.mark.parametrize("name", DAMAGED_FILES)
def test_truncated_files_are_refused_as_before(name, monkeypatch):
    data, header_end = damaged_file(name)
    every_cut = [*range(1, header_end, 1 + header_end // 1500), *range(header_end, len(data), 1 + len(data) // 20)]
    for cut in every_cut:
        assert parsed(data[:cut], monkeypatch, lean=True) == parsed(data[:cut], monkeypatch, lean=False), cut
    for cut in element_cuts(data):
        with pytest.raises(IsengardError) as error:
            parse_instance(data[:cut])
        assert error.value.code == ErrorCode.BAD_FILE_FORMAT, cut


def test_truncated_pixel_data_is_refused():
    for name in COMMON_FILES[:2]:
        data = sample(name).read_bytes()
        with pytest.raises(IsengardError) as error:
            parse_instance(data[:-10])
        assert error.value.code == ErrorCode.BAD_FILE_FORMAT


@pytest.mark.parametrize("name", DAMAGED_FILES)
def test_corrupted_files_read_as_pydicom_reads_them(name, monkeypatch):
    """Random bytes of the header replaced: the lean reader refuses the file, or reads it as pydicom."""
    data, header_end = damaged_file(name)
    rng = random.Random(name)
    for _ in range(300):
        corrupted = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            corrupted[rng.randrange(128, header_end)] = rng.randrange(256)
        corrupted_data = bytes(corrupted)
        assert parsed(corrupted_data, monkeypatch, lean=True) == parsed(corrupted_data, monkeypatch, lean=False)
        lean = read_common_file(corrupted_data)
        if lean is not None:
            assert_same_raw_elements(lean, pydicom_read(corrupted_data))


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_string_values_converted_without_elements_read_as_pydicoms_elements(name):
    """Outside Latin-1, element_text converts the raw values of string elements (PN aside) itself:
    the same text as from the element pydicom makes of them, in every sample (all character sets)."""
    try:
        instance = parse_instance((SAMPLES / name).read_bytes())
    except IsengardError:
        pytest.skip("not a file the server takes")
    dataset, charset = instance.dataset, instance.charset
    converted = {
        tag: parse.element_text(dataset, tag, charset) for tag, raw in dataset._dict.items()
        if isinstance(raw, RawDataElement) and not charset.keeps_stored_bytes
        and (raw.VR or parse._dictionary_vr(tag)) in parse.STRING_VRS - {"PN", "UN"}
    }
    for tag in converted:
        dataset[tag]  # pydicom makes its element: element_text reads that one then
    assert {tag: parse.element_text(dataset, tag, charset) for tag in converted} == converted
