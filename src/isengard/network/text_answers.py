"""C-FIND answers made only of text, encoded here rather than through pydicom.

A study list's answers hold text alone (names, dates, UIDs, counts written as IS). Building a
pydicom Dataset per answer, then having pynetdicom encode it, took two thirds of the time of a
study-level C-FIND of 40 answers. A TextAnswer keeps the texts and writes the elements itself,
for the little endian transfer syntaxes and the character sets whose text is plain bytes (no
ISO 2022 code extensions); otherwise pydicom encodes its `dataset()`, as before.

`install()` lets pynetdicom's C-FIND service hand a TextAnswer to `encoded` instead of pydicom.
"""

import struct
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pynetdicom import service_class

# Codecs whose text, once representable, is the bytes pydicom writes for it.
PLAIN_CODECS = frozenset({"ascii", "latin_1", "utf_8"})
# Explicit VR text VRs whose length takes 4 bytes.
LONG_TEXT_VRS = frozenset({"UC", "UR", "UT"})
TAG = struct.Struct("<HH")
SHORT_LENGTH = struct.Struct("<H")
LONG_LENGTH = struct.Struct("<I")

Element = tuple[BaseTag, str, str | None]  # tag, VR, text (None: an empty value)


class TextAnswer:
    def __init__(self, elements: list[Element], codec: str, dataset: Callable[[list[Element]], Dataset]):
        self.elements = sorted(elements, key=lambda element: element[0])
        self._codec = codec
        self._dataset = dataset

    def dataset(self) -> Dataset:
        """The same answer as pydicom's Dataset."""
        return self._dataset(self.elements)

    def encoded(self, implicit: bool) -> bytes | None:
        """The answer in little endian, implicit or explicit VR; None if a value is too long for
        its explicit VR header (pydicom then says so)."""
        parts = []
        for tag, vr, text in self.elements:
            value = b"" if text is None else text.encode(self._codec, "ignore")
            if len(value) % 2:
                value += b"\0" if vr == "UI" else b" "
            parts.append(TAG.pack(tag >> 16, tag & 0xFFFF))
            if implicit:
                parts.append(LONG_LENGTH.pack(len(value)))
            elif vr in LONG_TEXT_VRS:
                parts.append(vr.encode() + b"\0\0" + LONG_LENGTH.pack(len(value)))
            elif len(value) <= 0xFFFF:
                parts.append(vr.encode() + SHORT_LENGTH.pack(len(value)))
            else:
                return None
            parts.append(value)
        return b"".join(parts)


_pydicom_encode = service_class.encode


def _encode(dataset: Any, implicit: bool, little_endian: bool, deflated: bool = False) -> bytes | None:
    if isinstance(dataset, TextAnswer):
        encoded = dataset.encoded(implicit) if little_endian and not deflated else None
        if encoded is not None:
            return encoded
        dataset = dataset.dataset()
    return _pydicom_encode(dataset, implicit, little_endian, deflated)


def install() -> None:
    service_class.encode = _encode  # type: ignore[assignment]
