"""Frames of every transfer syntax decoded as independent decoders do: each sample is decompressed
to explicit little endian by DCMTK (JPEG, JPEG-LS, RLE, deflate, big endian) or GDCM (JPEG 2000),
whose pixels pydicom then reads without any codec; ours must be equal (nearly, for lossy JPEG,
whose decoders differ in their IDCT and chroma upsampling)."""

import shutil
import subprocess

import numpy
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian

from conftest import sample
from isengard.errors import ErrorCode, IsengardError
from isengard.images.decode import decode_frame, frame_count

SYNTAXES = sample("TransferSyntaxes")
# Transfer syntax -> the command that decompresses a file to explicit little endian, and whether
# its decoding may differ a little from ours (lossy JPEG).
REFERENCES = {
    f"TransferSyntaxes/{syntax}.dcm": reference for syntax, reference in {
        "1.2.840.10008.1.2": (["dcmconv", "+te"], False),
        "1.2.840.10008.1.2.1.99": (["dcmconv", "+te"], False),
        "1.2.840.10008.1.2.2": (["dcmconv", "+te"], False),
        "1.2.840.10008.1.2.4.50": (["dcmdjpeg"], True),
        "1.2.840.10008.1.2.4.51": (["dcmdjpeg"], False),  # 12 bits: decoded by GDCM
        "1.2.840.10008.1.2.4.57": (["dcmdjpeg"], False),
        "1.2.840.10008.1.2.4.70": (["dcmdjpeg"], False),
        "1.2.840.10008.1.2.4.80": (["dcmdjpls"], False),
        "1.2.840.10008.1.2.4.81": (["dcmdjpls"], False),
        "1.2.840.10008.1.2.4.90": (["gdcmconv", "--raw"], False),
        "1.2.840.10008.1.2.4.91": (["gdcmconv", "--raw"], False),
        "1.2.840.10008.1.2.5": (["dcmdrle"], False),
    }.items()
}
# RLE colour with planar configuration 1, in RGB and in YBR_FULL (Orthanc 1.10.1 mixes them up).
REFERENCES["2022-11-14-RLEPlanarConfiguration.dcm"] = (["dcmdrle"], False)
REFERENCES["2023-04-21-RLEPlanarConfigurationYBR_FULL.dcm"] = (["dcmdrle"], False)


@pytest.mark.parametrize("path", sorted(REFERENCES))
def test_frames_are_decoded_as_dcmtk_and_gdcm_decode_them(path, tmp_path):
    command, approximate = REFERENCES[path]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed (Debian packages dcmtk and libgdcm-tools)")
    source = sample(path)
    decompressed = tmp_path / "reference.dcm"
    subprocess.run([*command, str(source), str(decompressed)], check=True, capture_output=True)
    reference = pydicom.dcmread(decompressed, force=True)
    assert reference.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    expected = reference.pixel_array  # no codec: native pixel data (YBR converted to RGB, as ours)

    dataset = pydicom.dcmread(source, force=True)
    assert frame_count(dataset) == 1
    decoded = decode_frame(dataset, 0)
    assert decoded.shape == expected.shape
    assert decoded.dtype.kind == expected.dtype.kind
    if not approximate:
        assert numpy.array_equal(decoded, expected)
        return
    difference = numpy.abs(decoded.astype(numpy.int64) - expected.astype(numpy.int64))
    assert difference.mean() < 0.1 and numpy.percentile(difference, 99.9) <= 2, (difference.mean(), difference.max())


def test_frames_out_of_range_are_out_of_range_and_instances_without_pixels_unsupported_media_types():
    dataset = pydicom.dcmread(SYNTAXES / "1.2.840.10008.1.2.1.dcm")
    with pytest.raises(IsengardError) as error:
        decode_frame(dataset, 1)
    assert error.value.code == ErrorCode.PARAMETER_OUT_OF_RANGE  # each route answers it as Orthanc (test_images_rest)
    del dataset.PixelData
    assert frame_count(dataset) == 0
    with pytest.raises(IsengardError) as error:
        decode_frame(dataset, 0)
    assert error.value.code == ErrorCode.UNSUPPORTED_MEDIA_TYPE


def test_undecodable_pixel_data_is_an_unsupported_media_type():
    dataset = pydicom.dcmread(SYNTAXES / "1.2.840.10008.1.2.4.70.dcm")
    dataset.PixelData = encapsulate([b"\xff\xd8" + bytes(range(256)) * 4])  # no JPEG stream
    with pytest.raises(IsengardError) as error:
        decode_frame(dataset, 0)
    assert error.value.code == ErrorCode.UNSUPPORTED_MEDIA_TYPE
    assert "1.2.840.10008.1.2.4.70" in error.value.details
