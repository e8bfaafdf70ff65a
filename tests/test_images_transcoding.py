"""Transcoding: every sample rewritten in every lossless transfer syntax keeps its pixels bit for
bit, lossy syntaxes record it, and IngestTranscoding stores incoming instances transcoded, whether
they come by REST or by C-STORE."""

import io
import subprocess

import numpy
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian

from conftest import SAMPLES, running_isengard, sample
from isengard.errors import ErrorCode, IsengardError
from isengard.images.decode import decode_frame
from isengard.images.transcode import transcode

LOSSLESS_TARGETS = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.5",
                    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"]
SOURCES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50",
           "1.2.840.10008.1.2.4.51",
           "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
           "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5"]
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), force=True)


@pytest.mark.parametrize("target", LOSSLESS_TARGETS)
@pytest.mark.parametrize("source", SOURCES)
def test_lossless_transcoding_keeps_every_pixel(source, target):
    data = sample(f"TransferSyntaxes/{source}.dcm").read_bytes()
    original = read(data)
    transcoded = read(transcode(data, target))
    assert transcoded.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2") == target
    assert transcoded.SOPInstanceUID == original.SOPInstanceUID and transcoded.PatientName == original.PatientName
    assert numpy.array_equal(decode_frame(transcoded, 0), decode_frame(original, 0))
    assert "LossyImageCompressionMethod" not in transcoded or "LossyImageCompressionMethod" in original


def test_dcmtk_reads_what_is_transcoded(tmp_path):
    data = sample("TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm").read_bytes()
    for target in LOSSLESS_TARGETS:
        path = tmp_path / f"{target}.dcm"
        path.write_bytes(transcode(data, target))
        dumped = subprocess.run(["dcmdump", "-Un", "+P", "0002,0010", str(path)], capture_output=True, text=True, check=True)
        assert target in dumped.stdout


@pytest.mark.parametrize("target, method", [("1.2.840.10008.1.2.4.50", "ISO_10918_1"),
                                            ("1.2.840.10008.1.2.4.91", "ISO_15444_1"),
                                            ("1.2.840.10008.1.2.4.81", "ISO_14495_1")])
def test_lossy_transcoding_says_so(target, method):
    data = sample("TransferSyntaxes/1.2.840.10008.1.2.1.dcm").read_bytes()  # 8-bit RGB
    transcoded = read(transcode(data, target, quality=80))
    assert transcoded.file_meta.TransferSyntaxUID == target
    assert (transcoded.LossyImageCompression, transcoded.LossyImageCompressionMethod) == ("01", method)
    assert float(transcoded.LossyImageCompressionRatio) > 1
    difference = numpy.abs(decode_frame(transcoded, 0).astype(int) - decode_frame(read(data), 0).astype(int))
    assert difference.mean() < 6


def broken_jpeg() -> bytes:
    """A JPEG lossless file whose compressed frame is not a JPEG stream."""
    dataset = read(sample("TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm").read_bytes())
    dataset.PixelData = encapsulate([b"\xff\xd8" + bytes(range(256)) * 4])
    dataset.SOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    output = io.BytesIO()
    dataset.save_as(output, enforce_file_format=True)
    return output.getvalue()


def test_what_cannot_be_transcoded_is_refused_with_the_reason():
    with pytest.raises(IsengardError) as error:
        transcode(broken_jpeg(), ExplicitVRLittleEndian)
    assert error.value.code == ErrorCode.UNSUPPORTED_MEDIA_TYPE
    sixteen_bits = sample("SignedCT.dcm").read_bytes()
    with pytest.raises(IsengardError) as error:
        transcode(sixteen_bits, "1.2.840.10008.1.2.4.50")
    assert error.value.code == ErrorCode.BAD_REQUEST
    with pytest.raises(IsengardError) as error:
        transcode(sixteen_bits, "1.2.3.4")
    assert error.value.code == ErrorCode.PARAMETER_OUT_OF_RANGE


def stored_syntax(server, instance_id: str) -> str:
    return server.client.get(f"/instances/{instance_id}/metadata/TransferSyntax").text


def test_ingest_transcoding_by_rest_and_by_c_store(tmp_path):
    uncompressed = SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.1.dcm"
    jpeg_lossless = SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.4.70.dcm"
    with running_isengard(tmp_path / "isengard", IngestTranscoding=J2K_LOSSLESS, DicomAlwaysAllowStore=True) as server:
        by_rest = server.upload(uncompressed)["ID"]
        stored = read(server.client.get(f"/instances/{by_rest}/file").content)
        assert stored_syntax(server, by_rest) == stored.file_meta.TransferSyntaxUID == J2K_LOSSLESS
        assert numpy.array_equal(decode_frame(stored, 0), decode_frame(read(uncompressed.read_bytes()), 0))
        subprocess.run(["storescu", "-R", "-xs", "127.0.0.1", str(server.config["DicomPort"]), str(jpeg_lossless)],
                       check=True, capture_output=True)
        by_dicom = server.client.post("/tools/lookup", content=read(jpeg_lossless.read_bytes()).SOPInstanceUID).json()[0]["ID"]
        assert stored_syntax(server, by_dicom) == J2K_LOSSLESS
        # Pixel data that cannot be decoded: stored as received rather than lost.
        kept = server.client.post("/instances", content=broken_jpeg()).json()["ID"]
        assert stored_syntax(server, kept) == "1.2.840.10008.1.2.4.70"


def test_ingest_transcoding_of_uncompressed_instances_may_be_left_out(tmp_path):
    options = {"IngestTranscoding": J2K_LOSSLESS, "IngestTranscodingOfUncompressed": False}
    with running_isengard(tmp_path / "isengard", **options) as server:
        uncompressed = server.upload(SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.1.dcm")["ID"]
        compressed = server.upload(SAMPLES / "TransferSyntaxes" / "1.2.840.10008.1.2.5.dcm")["ID"]
        assert stored_syntax(server, uncompressed) == "1.2.840.10008.1.2.1"
        assert stored_syntax(server, compressed) == J2K_LOSSLESS
