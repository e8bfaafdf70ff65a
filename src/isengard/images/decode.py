"""Frames decoded to numpy arrays by pydicom's pixel handlers: pylibjpeg (libjpeg, openjpeg, RLE),
pyjpegls and GDCM for the compressed transfer syntaxes, pydicom itself for the others."""

from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import ErrorCode, IsengardError

if TYPE_CHECKING:
    import numpy

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def frame_count(dataset: Dataset) -> int:
    """The number of frames of the instance (0 without pixel data)."""
    if not any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS):
        return 0
    try:
        return max(int(dataset.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def decode_frame(dataset: Dataset, index: int) -> "numpy.ndarray":
    """Frame `index` (from 0) as stored: rows × columns of the stored values for one sample per
    pixel, rows × columns × 3 for colour, YBR converted to RGB. Raises IsengardError: BadFileFormat
    without pixel data or beyond the last frame, UnsupportedMediaType if it cannot be decoded."""
    count = frame_count(dataset)
    if count == 0:
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, "The instance has no pixel data")
    if not 0 <= index < count:
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, f"No frame {index}: the instance has {count}")
    from pydicom.pixels import pixel_array

    _declare_transfer_syntax(dataset)
    try:
        return pixel_array(dataset, index=index, raw=False)
    except Exception as exc:  # the codecs raise anything, from RuntimeError to struct.error
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown") if dataset.file_meta else "unknown"
        raise IsengardError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"Cannot decode the pixel data (transfer syntax {syntax}): {exc}"
        ) from None


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
