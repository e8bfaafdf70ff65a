"""TextAnswer writes the bytes pydicom would write for the same C-FIND answer."""

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom.dsutils import encode

from isengard.network.text_answers import TextAnswer, _encode

ELEMENTS = [
    (Tag(0x00100010), "PN", "Müller^Jürgen=ミュラー"),  # odd and even lengths, non-ASCII
    (Tag(0x00080005), "CS", "ISO_IR 192"),
    (Tag(0x0020000D), "UI", "1.2.3"),  # padded with NUL
    (Tag(0x00080020), "DA", None),  # empty
    (Tag(0x00081030), "LO", "A\\B"),  # two values
    (Tag(0x00201208), "IS", "12"),
    (Tag(0x00080061), "CS", "CT\\MR"),
    (Tag(0x00081080), "LO", ""),
    (Tag(0x00204000), "LT", "x" * 301),
    (Tag(0x00400280), "ST", "comment "),
    (Tag(0x00080054), "AE", "ORTHANC"),
]


def pydicom_dataset(elements):
    dataset = Dataset()
    for tag, vr, text in elements:
        dataset.add(DataElement(tag, vr, text))
    return dataset


@pytest.mark.parametrize("implicit", [True, False])
def test_encoded_as_pydicom_encodes(implicit):
    answer = TextAnswer(ELEMENTS, "utf_8", pydicom_dataset)
    assert answer.encoded(implicit) == encode(pydicom_dataset(ELEMENTS), implicit, True)
    assert _encode(answer, implicit, True) == answer.encoded(implicit)


def test_long_text_and_other_syntaxes_go_to_pydicom():
    long_text = [(Tag(0x00081030), "LO", "x" * 70000), (Tag(0x00204000), "UT", "y" * 70000)]
    answer = TextAnswer(long_text, "latin_1", pydicom_dataset)
    assert answer.encoded(implicit=False) is None  # LO's explicit length has 2 bytes
    assert _encode(answer, False, True) == encode(pydicom_dataset(long_text), False, True)
    assert _encode(answer, False, False) == encode(pydicom_dataset(long_text), False, False)  # big endian
