"""Frames decoded to numpy arrays by pydicom's pixel handlers: pylibjpeg (libjpeg, openjpeg, RLE),
pyjpegls and GDCM for the compressed transfer syntaxes, pydicom itself for the others."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit,
)

from ..errors import ErrorCode, IsengardError

if TYPE_CHECKING:
    import numpy

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def frame_count(dataset: Dataset) -> int:
    """The number of frames of the instance (0 without pixel data)."""
    if not any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS):
        return 0
    return declared_frame_count(dataset)


def declared_frame_count(dataset: Dataset) -> int:
    """The number of frames the instance declares, pixel data or not (as /frames lists them)."""
    try:
        return max(int(dataset.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def decode_frame(dataset: Dataset, index: int) -> "numpy.ndarray":
    """Frame `index` (from 0) as stored: rows × columns of the stored values for one sample per
    pixel, rows × columns × 3 for colour, YBR and palettes converted to RGB, 1-bit pixels as 0 and
    255 (as Orthanc 1.10.1 answers them). Raises IsengardError UnsupportedMediaType without pixel
    data or if the frame cannot be decoded, ParameterOutOfRange beyond the last frame."""
    count = frame_count(dataset)
    if count == 0:
        raise IsengardError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "The instance has no pixel data")
    _check_frame(index, count)
    from pydicom.pixels import pixel_array

    _declare_transfer_syntax(dataset)
    complete_pixel_description(dataset)
    try:
        if _syntax(dataset) == JPEGExtended12Bit and int(dataset.get("BitsStored") or 8) > 8:
            return _decoded_by_gdcm(dataset, index)
        frame = pixel_array(dataset, index=index, raw=False, decoding_plugin=decoding_plugin(dataset))
        if str(dataset.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
            frame = _palette_applied(frame, dataset)
        if int(dataset.get("BitsAllocated") or 0) == 1:
            frame = frame * 255  # stays uint8
        return frame
    except Exception as exc:  # the codecs raise anything, from RuntimeError to struct.error
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown") if dataset.file_meta else "unknown"
        raise IsengardError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"Cannot decode the pixel data (transfer syntax {syntax}): {exc}"
        ) from None


def _check_frame(index: int, count: int) -> None:
    if not 0 <= index < count:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"No frame {index}: the instance has {count}")


def _syntax(dataset: Dataset) -> str | None:
    return dataset.file_meta.get("TransferSyntaxUID") if dataset.file_meta else None


def _decoded_by_gdcm(dataset: Dataset, index: int) -> "numpy.ndarray":
    """12-bit JPEG, which pydicom's plugins do not decode, by GDCM's own reader (its 12-bit
    IJG library): the whole pixel data, of which the frame asked for."""
    import tempfile

    import gdcm
    import numpy

    with tempfile.NamedTemporaryFile(suffix=".dcm") as file:
        dataset.save_as(file.name, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(file.name)
        with _stderr_silenced():  # GDCM tries its 8-bit decoder first, which complains on stderr
            if not reader.Read():
                raise ValueError("GDCM cannot read the pixel data")
            buffer = reader.GetImage().GetBuffer().encode("utf-8", "surrogateescape")  # SWIG gives the bytes as str
    samples = int(dataset.get("SamplesPerPixel") or 1)
    dtype = numpy.int16 if int(dataset.get("PixelRepresentation") or 0) else numpy.uint16
    frames = numpy.frombuffer(buffer, dtype=dtype).reshape(frame_count(dataset), int(dataset.Rows), int(dataset.Columns),
                                                            *((samples,) if samples > 1 else ()))
    return frames[index]


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    saved = os.dup(2)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def decoding_plugin(dataset: Dataset) -> str:
    """Pillow for baseline JPEG: its libjpeg-turbo decodes and converts YCbCr to RGB twice as fast
    as pylibjpeg and numpy (12 instead of 23 ms for a 975×743 ultrasound frame). pydicom chooses
    among the others."""
    return "pillow" if _syntax(dataset) == JPEGBaseline8Bit else ""


def complete_pixel_description(dataset: Dataset) -> None:
    """Files that leave out mandatory attributes of their pixels get the defaults Orthanc assumes."""
    if "SamplesPerPixel" not in dataset:
        dataset.SamplesPerPixel = 3 if str(dataset.get("PhotometricInterpretation", "")).startswith(("RGB", "YBR")) else 1
    if "PixelRepresentation" not in dataset:
        dataset.PixelRepresentation = 0


def _declare_transfer_syntax(dataset: Dataset) -> None:
    """A dataset stored without file meta information (accepted as DCMTK does) is in the encoding
    pydicom read it with: the pixel handlers need it as a transfer syntax."""
    if dataset.file_meta and "TransferSyntaxUID" in dataset.file_meta:
        return
    implicit_vr, little_endian = dataset.original_encoding
    if implicit_vr is None:
        return
    syntax = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
    dataset.ensure_file_meta()
    dataset.file_meta.TransferSyntaxUID = syntax


def _palette_applied(frame: "numpy.ndarray", dataset: Dataset) -> "numpy.ndarray":
    """The RGB of a palette colour frame, at 8 bits (16-bit palettes keep their high byte)."""
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(frame, dataset)
    return (rgb >> 8).astype("uint8") if rgb.dtype.itemsize > 1 else rgb


# The frames of these transfer syntaxes are files of an image format (Orthanc's media types).
RAW_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
}


def raw_media_type(dataset: Dataset) -> str:
    syntax = dataset.file_meta.get("TransferSyntaxUID") if dataset.file_meta else None
    return RAW_MEDIA_TYPES.get(str(syntax), "application/octet-stream")


def raw_frame(dataset: Dataset, index: int) -> bytes:
    """Frame `index` as it is stored: its bytes in the pixel data, or its compressed fragments."""
    from pydicom.encaps import get_frame

    count = frame_count(dataset)
    if count == 0:  # Orthanc's answer too, where a decoding would be an unsupported media type
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, "The instance has no pixel data")
    _check_frame(index, count)
    data = dataset.PixelData
    syntax = dataset.file_meta.get("TransferSyntaxUID") if dataset.file_meta else None
    if syntax is not None and syntax.is_compressed:
        return get_frame(data, index, number_of_frames=count)
    bits = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel", 1)) * int(dataset.BitsAllocated)
    size = (bits + 7) // 8
    if (index + 1) * size > len(data):
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, f"The pixel data is too short for frame {index}")
    return bytes(data[index * size:(index + 1) * size])
