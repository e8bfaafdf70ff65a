"""Transcoding: a DICOM file rewritten in another transfer syntax, run in the image processes.

Compressed pixel data is decoded first (as images are); the dataset is then written in the
target syntax: uncompressed (implicit or explicit VR, big endian, deflated), or compressed by
pydicom's encoders (RLE, JPEG-LS, JPEG 2000) or, for baseline JPEG, by Pillow. Lossless targets
keep every pixel; lossy ones (baseline JPEG, JPEG-LS near-lossless, JPEG 2000 lossy) are only
made when asked for by name, and record the lossy compression attributes. The SOP instance UID is
kept: the instance stays the one the modality sent (Orthanc does the same).
"""

import io

import numpy
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID, JPEG2000, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit,
    JPEGExtended12Bit, JPEGLSNearLossless,
)

from ..errors import ErrorCode, IsengardError
from .decode import PIXEL_DATA_KEYWORDS, complete_pixel_description, decode_frame, decoding_plugin, frame_count

# Lossy targets: the method of the LossyImageCompressionMethod attribute (PS3.3 C.7.6.1.1.5).
LOSSY_METHODS = {JPEGBaseline8Bit: "ISO_10918_1", JPEGLSNearLossless: "ISO_14495_1", JPEG2000: "ISO_15444_1"}
JPEG2000_LOSSY_RATIO = 10  # compression ratio asked of OpenJPEG (PS3.5: lossy J2K)
JPEGLS_NEAR_LOSSLESS_ERROR = 2


def transcode(data: bytes, syntax: str, quality: int = 90) -> bytes:
    """The file `data` in transfer syntax `syntax`; `quality` (1-100) for baseline JPEG."""
    dataset = _read(data)
    source, target = _syntax_of(dataset), UID(syntax)
    if source == target:
        return data
    if not target.is_transfer_syntax:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Not a transfer syntax: {syntax}")
    if ExplicitVRBigEndian in (source, target):  # retired, and pydicom does not swap the bytes
        raise IsengardError(ErrorCode.NOT_IMPLEMENTED, "Transcoding from or to explicit VR big endian is not supported")
    has_pixels = any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS)
    if has_pixels and source.is_compressed:
        _decompress(dataset)
    original_size = len(dataset.get("PixelData", b"")) if has_pixels else 0
    if target.is_compressed:
        if not has_pixels:
            raise IsengardError(ErrorCode.BAD_FILE_FORMAT, f"An instance without pixel data cannot be in {target.name}")
        _compress(dataset, target, quality)
        if target in LOSSY_METHODS:
            _mark_lossy(dataset, target, original_size)
    else:
        dataset.file_meta.TransferSyntaxUID = target
    output = io.BytesIO()
    dataset.save_as(output, enforce_file_format=True)
    return output.getvalue()


def _read(data: bytes) -> Dataset:
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, f"Cannot read the DICOM file: {exc}") from None
    dataset.ensure_file_meta()
    # A file without meta information (accepted as DCMTK does) gets it from its dataset.
    dataset.file_meta.setdefault("MediaStorageSOPClassUID", dataset.get("SOPClassUID"))
    dataset.file_meta.setdefault("MediaStorageSOPInstanceUID", dataset.get("SOPInstanceUID"))
    dataset.file_meta.setdefault("TransferSyntaxUID", _syntax_of(dataset))
    return dataset


def _syntax_of(dataset: Dataset) -> UID:
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if syntax is not None:
        return UID(syntax)
    implicit_vr, little_endian = dataset.original_encoding
    return ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian


def _decompress(dataset: Dataset) -> None:
    """Native pixel data, decoded as for display (YBR becomes RGB, which the photometric
    interpretation then says), by the same codec."""
    complete_pixel_description(dataset)
    if dataset.file_meta.TransferSyntaxUID == JPEGExtended12Bit:  # GDCM's, frame by frame (see decode.py)
        frames = [decode_frame(dataset, index) for index in range(frame_count(dataset))]
        dataset.PixelData = numpy.stack(frames).tobytes()
        dataset["PixelData"].VR = "OW"
        dataset["PixelData"].is_undefined_length = False
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return
    try:
        dataset.decompress(generate_instance_uid=False, decoding_plugin=decoding_plugin(dataset))
    except Exception as exc:  # the codecs raise anything
        raise IsengardError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"Cannot decode the pixel data: {exc}") from None


def _compress(dataset: Dataset, target: UID, quality: int) -> None:
    try:
        if target == JPEGBaseline8Bit:
            _compress_baseline_jpeg(dataset, quality)
        elif target == JPEG2000:
            dataset.compress(target, generate_instance_uid=False, j2k_cr=[JPEG2000_LOSSY_RATIO])
        elif target == JPEGLSNearLossless:
            dataset.compress(target, generate_instance_uid=False, jls_error=JPEGLS_NEAR_LOSSLESS_ERROR)
        else:
            dataset.compress(target, generate_instance_uid=False)
    except IsengardError:
        raise
    except Exception as exc:  # no encoder for this syntax, or for these pixels
        raise IsengardError(ErrorCode.NOT_IMPLEMENTED, f"Cannot encode the pixel data in {target.name}: {exc}") from None


def _compress_baseline_jpeg(dataset: Dataset, quality: int) -> None:
    """Each frame through Pillow's JPEG encoder: 8-bit greyscale, or RGB as YCbCr 4:2:2."""
    from PIL import Image

    if int(dataset.BitsAllocated) != 8:
        raise IsengardError(ErrorCode.BAD_REQUEST, "Baseline JPEG holds 8-bit pixels only")
    frames = []
    for index in range(frame_count(dataset)):
        output = io.BytesIO()
        frame = numpy.ascontiguousarray(decode_frame(dataset, index).astype(numpy.uint8))
        Image.fromarray(frame).save(output, "JPEG", quality=quality, subsampling=1)  # 1: 4:2:2
        frames.append(output.getvalue())
    colour = int(dataset.get("SamplesPerPixel", 1)) == 3
    dataset.PixelData = encapsulate(frames)
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    if colour:
        dataset.PhotometricInterpretation = "YBR_FULL_422"
        dataset.PlanarConfiguration = 0
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def _mark_lossy(dataset: Dataset, target: UID, original_size: int) -> None:
    compressed_size = max(len(dataset.PixelData), 1)
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionRatio = f"{original_size / compressed_size:.4g}"
    dataset.LossyImageCompressionMethod = LOSSY_METHODS[target]
