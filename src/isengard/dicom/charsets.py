"""Orthanc's names of character sets (DefaultEncoding) and the Python codecs that decode them."""

# Orthanc encoding -> (Python codec, DICOM SpecificCharacterSet term)
ENCODINGS: dict[str, tuple[str, str]] = {
    "Ascii": ("ascii", "ISO_IR 6"),
    "Utf8": ("utf_8", "ISO_IR 192"),
    "Latin1": ("latin_1", "ISO_IR 100"),
    "Latin2": ("iso8859_2", "ISO_IR 101"),
    "Latin3": ("iso8859_3", "ISO_IR 109"),
    "Latin4": ("iso8859_4", "ISO_IR 110"),
    "Latin5": ("iso8859_9", "ISO_IR 148"),
    "Cyrillic": ("iso8859_5", "ISO_IR 144"),
    "Windows1251": ("cp1251", "ISO_IR 144"),
    "Arabic": ("iso8859_6", "ISO_IR 127"),
    "Greek": ("iso8859_7", "ISO_IR 126"),
    "Hebrew": ("iso8859_8", "ISO_IR 138"),
    "Thai": ("iso8859_11", "ISO_IR 166"),
    "Japanese": ("shift_jis", "ISO_IR 13"),
    "Chinese": ("gb18030", "GB18030"),
    "JapaneseKanji": ("iso2022_jp", "ISO 2022 IR 87"),
    "Korean": ("euc_kr", "ISO 2022 IR 149"),
    "SimplifiedChinese": ("gb2312", "GBK"),
}


def python_codec(encoding: str) -> str:
    return ENCODINGS[encoding][0]
