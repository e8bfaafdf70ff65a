"""The image routes of instances, against Orthanc 1.10.1 on the same samples: same status, same
image size and mode, and the same pixels (exactly, but for lossy JPEG decoded by another library,
and for resized images). Then what Isengard alone promises: its answers to bad requests, and an
image process that dies or crashes is replaced without the server noticing."""

import io
import os
import signal
import time

import numpy
import pytest
from PIL import Image

from conftest import SAMPLES, child_pids
from orthanc import orthanc  # noqa: F401 (the module-scoped fixture)

IMAGES = [
    *(f"TransferSyntaxes/{path.name}" for path in sorted((SAMPLES / "TransferSyntaxes").glob("*.dcm"))),
    "SignedCT.dcm", "ColorTestMalaterre.dcm", "Implicit-vr-us-palette.dcm", "Issue44/Monochrome1-Jpeg.dcm",
    "Issue16.dcm", "Issue22-NoPixelData.dcm", "MultiframeWindowing.dcm", "2022-11-14-RLEPlanarConfiguration.dcm",
    "2023-04-21-RLEPlanarConfigurationYBR_FULL.dcm", "Formats/Jpeg.dcm", "Formats/JpegLossless.dcm", "Formats/Rle.dcm",
    "Formats/jp2k91YBR-ICT.dcm", "Knix/Loc/IM-0001-0001.dcm", "2026-05-26-oob-monochrome-65535.dcm",
    "DicomSeg.dcm",  # 1 bit per pixel
]
ROUTES = ["preview", "image-uint8", "image-uint16", "image-int16", "rendered", "frames/0/rendered?window-center=40&window-width=400",
          "frames/0/preview"]
# Lossy JPEG: libjpeg and DCMTK's IJG differ in their IDCT and chroma upsampling by a grey level or two.
LOSSY = {"TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm", "Issue44/Monochrome1-Jpeg.dcm", "Formats/Jpeg.dcm", "Issue16.dcm"}
# JPEG 2000, which Orthanc 1.10.1 does not decode without a plugin (test_images_decode.py checks
# Isengard's pixels against GDCM's).
DECODED_BY_ISENGARD_ONLY = {"TransferSyntaxes/1.2.840.10008.1.2.4.90.dcm", "TransferSyntaxes/1.2.840.10008.1.2.4.91.dcm",
                            "Formats/jp2k91YBR-ICT.dcm"}
# RLE colour with planar configuration 1, which Orthanc 1.10.1 mixes up (the samples of its bug
# report; test_images_decode.py checks Isengard's pixels against DCMTK's).
WRONG_IN_ORTHANC = {"2022-11-14-RLEPlanarConfiguration.dcm", "2023-04-21-RLEPlanarConfigurationYBR_FULL.dcm"}


@pytest.fixture(scope="module")
def stored(isengard, orthanc):  # noqa: F811
    """The image samples uploaded to both servers: path -> instance ID (the same on both)."""
    ids = {}
    for path in IMAGES:
        data = (SAMPLES / path).read_bytes()
        answers = [server.client.post("/instances", content=data) for server in (isengard, orthanc)]
        assert [answer.status_code for answer in answers] == [200, 200], path
        assert answers[0].json()["ID"] == answers[1].json()["ID"]
        ids[path] = answers[0].json()["ID"]
    return ids


def pixels(body: bytes) -> tuple[str, tuple[int, int], numpy.ndarray]:
    image = Image.open(io.BytesIO(body))
    return image.mode, image.size, numpy.asarray(image).astype(numpy.int64)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("path", IMAGES)
def test_images_are_those_of_orthanc(isengard, orthanc, stored, path, route):  # noqa: F811
    url = f"/instances/{stored[path]}/{route}"
    ours, theirs = isengard.client.get(url), orthanc.client.get(url)
    if path in DECODED_BY_ISENGARD_ONLY and theirs.status_code == 415:
        colour_values = "image-" in route and pixels(isengard.client.get(f"/instances/{stored[path]}/preview").content)[0] == "RGB"
        assert ours.status_code == 415 if colour_values else ours.content.startswith(b"\x89PNG")
        return
    assert ours.status_code == theirs.status_code, ours.text
    if theirs.status_code != 200:
        assert ours.status_code == 415
        return
    assert ours.headers["content-type"] == theirs.headers["content-type"] == "image/png"
    (mode, size, mine), (their_mode, their_size, reference) = pixels(ours.content), pixels(theirs.content)
    assert (mode, size) == (their_mode, their_size)
    if path in WRONG_IN_ORTHANC:
        return
    difference = numpy.abs(mine - reference)
    if path in LOSSY:
        # The stretch of a preview or a window magnifies a decoder's difference of a grey level.
        assert difference.mean() < 1.5 and numpy.percentile(difference, 99) <= 8, (difference.mean(), difference.max())
    else:
        assert difference.max() == 0, (difference.mean(), difference.max(), (difference > 0).sum())


@pytest.mark.parametrize("path", IMAGES)
def test_frame_lists_and_raw_frames_are_those_of_orthanc(isengard, orthanc, stored, path):  # noqa: F811
    url = f"/instances/{stored[path]}/frames"
    ours, theirs = isengard.client.get(url), orthanc.client.get(url)
    assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())
    for frame in ours.json()[:1] + ours.json()[-1:]:
        for suffix in ("raw", "raw.gz"):
            raw = f"{url}/{frame}/{suffix}"
            ours, theirs = isengard.client.get(raw), orthanc.client.get(raw)
            assert ours.status_code == theirs.status_code
            if ours.status_code == 200:
                assert ours.headers["content-type"] == theirs.headers["content-type"]
                assert suffix == "raw.gz" or ours.content == theirs.content


def test_multiframe_frames_and_their_limit(isengard, stored):
    instance = stored["Issue16.dcm"]
    assert isengard.client.get(f"/instances/{instance}/frames").json() == list(range(34))
    last, beyond = (isengard.client.get(f"/instances/{instance}/frames/{n}/preview") for n in (33, 34))
    assert last.status_code == 200 and pixels(last.content)[:2] == ("RGB", (480, 430))
    assert beyond.status_code == 415 and "No frame 34" in beyond.json()["Details"]
    assert isengard.client.get(f"/instances/{instance}/frames/x/preview").status_code == 404


def test_rendered_fits_the_size_asked_for_keeping_the_aspect_ratio(isengard, stored):
    instance = stored["Issue44/Monochrome1-Jpeg.dcm"]  # 2010 × 2446
    for query, size in [("width=100", (100, 122)), ("height=100", (82, 100)), ("width=100&height=100", (82, 100)),
                        ("width=500&height=50&smooth=1", (41, 50))]:
        answer = isengard.client.get(f"/instances/{instance}/rendered?{query}")
        assert answer.status_code == 200 and pixels(answer.content)[1] == size, query


def test_formats_follow_the_accept_header(isengard, stored):
    url = f"/instances/{stored['SignedCT.dcm']}"
    jpeg = isengard.client.get(f"{url}/preview?quality=50", headers={"Accept": "image/jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg" and pixels(jpeg.content)[:2] == ("L", (512, 512))
    pam = isengard.client.get(f"{url}/image-uint16", headers={"Accept": "image/x-portable-arbitrarymap"})
    header = b"P7\nWIDTH 512\nHEIGHT 512\nDEPTH 1\nMAXVAL 65535\nTUPLTYPE GRAYSCALE\nENDHDR\n"
    assert pam.content.startswith(header) and len(pam.content) == len(header) + 512 * 512 * 2
    png = isengard.client.get(f"{url}/image-uint16").content
    assert numpy.array_equal(numpy.frombuffer(pam.content[len(header):], ">u2").reshape(512, 512), pixels(png)[2])
    # Orthanc 1.10.1 answers these with a bare 404 or 415; Isengard says what is wrong.
    assert isengard.client.get(f"{url}/preview", headers={"Accept": "text/html"}).status_code == 406
    assert isengard.client.get(f"{url}/image-uint16", headers={"Accept": "image/jpeg"}).status_code == 406
    assert isengard.client.get(f"{url}/preview?quality=0", headers={"Accept": "image/jpeg"}).status_code == 400
    assert isengard.client.get(f"{url}/rendered?window-width=abc").status_code == 400
    assert isengard.client.get("/instances/nonexistent/preview").status_code == 404


def image_processes(server) -> list[int]:
    return [pid for pid in child_pids(server.process.pid)
            if b"isengard.images.worker" in open(f"/proc/{pid}/cmdline", "rb").read()]


def test_images_are_decoded_out_of_the_server_process(isengard, stored):
    assert isengard.client.get(f"/instances/{stored['SignedCT.dcm']}/preview").status_code == 200
    maps = open(f"/proc/{isengard.process.pid}/maps").read()
    for library in ("numpy", "/PIL/", "gdcm", "openjpeg", "libjpeg", "jpeg_ls"):
        assert library not in maps, library
    assert image_processes(isengard)


def test_a_dead_image_process_is_replaced(isengard, stored):
    url = f"/instances/{stored['SignedCT.dcm']}/preview"
    assert isengard.client.get(url).status_code == 200
    for pid in image_processes(isengard):
        os.kill(pid, signal.SIGKILL)  # as a codec's crash would
    time.sleep(0.1)
    assert isengard.client.get(url).status_code == 200
    assert isengard.client.get("/system").status_code == 200


@pytest.mark.parametrize("frame", range(4))
def test_frames_of_an_enhanced_multiframe_have_their_own_window(isengard, orthanc, stored, frame):  # noqa: F811
    """Frame 0 has a window in its functional group; the others only their rescale."""
    url = f"/instances/{stored['MultiframeWindowing.dcm']}/frames/{frame}/rendered"
    ours, theirs = isengard.client.get(url), orthanc.client.get(url)
    assert ours.status_code == theirs.status_code == 200
    assert numpy.array_equal(pixels(ours.content)[2], pixels(theirs.content)[2])
    assert pixels(ours.content)[2].tolist() == ([[95, 127], [159, 191]] if frame == 0 else [[0, 0], [0, 0]])


# A colour frame that is not square: Orthanc 1.10.1 reshapes its samples to [ 3 rows columns ],
# which MATLAB's permute then turns into columns × rows × 3; Isengard writes [ 3 columns rows ].
MATLAB_SWAPPED_IN_ORTHANC = {"Implicit-vr-us-palette.dcm": (b"[ 3 600 800 ]", b"[ 3 800 600 ]")}
ARRAYS = ["SignedCT.dcm", "ColorTestMalaterre.dcm", "MultiframeWindowing.dcm", "TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm",
          "TransferSyntaxes/1.2.840.10008.1.2.5.dcm", "Implicit-vr-us-palette.dcm", "DicomSeg.dcm"]


@pytest.mark.parametrize("route", ["numpy", "numpy?rescale=0", "numpy?compress=1", "frames/0/numpy", "frames/0/numpy?rescale=false",
                                   "matlab", "frames/0/matlab"])
@pytest.mark.parametrize("path", ARRAYS)
def test_arrays_are_those_of_orthanc(isengard, orthanc, stored, path, route):  # noqa: F811
    url = f"/instances/{stored[path]}/{route}"
    ours, theirs = isengard.client.get(url), orthanc.client.get(url)
    assert ours.status_code == theirs.status_code
    if ours.status_code != 200:
        return
    assert ours.headers["content-type"].split(";")[0] == theirs.headers["content-type"].split(";")[0]
    if "matlab" in route:
        theirs_swapped, ours_expected = MATLAB_SWAPPED_IN_ORTHANC.get(path, (b"", b""))
        assert ours.content == theirs.content.replace(theirs_swapped, ours_expected)
        return
    mine, reference = (numpy.load(io.BytesIO(answer.content)) for answer in (ours, theirs))
    if "compress" in route:
        (mine,), (reference,) = mine.values(), reference.values()
    assert (mine.dtype, mine.shape) == (reference.dtype, reference.shape)
    assert numpy.array_equal(mine, reference)


@pytest.mark.parametrize("route", ["preview", "image-uint16", "rendered", "numpy", "matlab", "raw", "raw.gz"])
@pytest.mark.parametrize("path", ["TransferSyntaxes/1.2.840.10008.1.2.dcm", "TransferSyntaxes/1.2.840.10008.1.2.1.99.dcm",
                                  "DicomSeg.dcm", "TransferSyntaxes/1.2.840.10008.1.2.5.dcm", "Issue16.dcm"])
def test_a_frame_beyond_the_last_is_refused_as_by_orthanc(isengard, orthanc, stored, path, route):  # noqa: F811
    """Images: 404 if the file is uncompressed, 415 if compressed; arrays and raw frames: 400."""
    frames = len(orthanc.client.get(f"/instances/{stored[path]}/frames").json())
    url = f"/instances/{stored[path]}/frames/{frames}/{route}"
    ours, theirs = isengard.client.get(url), orthanc.client.get(url)
    assert ours.status_code == theirs.status_code, ours.text
    assert f"No frame {frames}" in ours.json()["Details"]


def thirty_two_bit_file(signed: bool) -> tuple[bytes, numpy.ndarray]:
    """A 4 × 5 greyscale image of 32-bit pixels reaching both ends of their range, and its values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    values = numpy.arange(20, dtype=numpy.int64).reshape(4, 5) * 100_000 - (1_000_000 if signed else 0)
    if signed:
        values[0, 0] = -2**31
    values[3, 4] = 2**31 - 1 if signed else 2**32 - 1
    values = values.astype(numpy.int32 if signed else numpy.uint32)
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.SOPInstanceUID, dataset.StudyInstanceUID, dataset.SeriesInstanceUID = (generate_uid() for _ in range(3))
    dataset.PatientID = "32BITS"
    dataset.Rows, dataset.Columns, dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 4, 5, 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 32, 32, 31, int(signed)
    dataset.PixelData = values.tobytes()
    output = io.BytesIO()
    dataset.save_as(output, enforce_file_format=True)
    return output.getvalue(), values


@pytest.mark.parametrize("signed", [False, True])
def test_32_bit_pixels_are_decoded_and_windowed(isengard, signed):
    """Orthanc 1.10.1 answers 415 to every image of these; Isengard decodes them."""
    data, values = thirty_two_bit_file(signed)
    instance = isengard.client.post("/instances", content=data).json()["ID"]
    stored = numpy.load(io.BytesIO(isengard.client.get(f"/instances/{instance}/numpy?rescale=0").content))
    assert stored.dtype == values.dtype and numpy.array_equal(stored[0, :, :, 0], values)
    low = -1_000_000 if signed else 0  # a window of 2,000,000 from the first value after the minimum
    rendered = isengard.client.get(f"/instances/{instance}/rendered?window-center={low + 1_000_000}&window-width=2000000")
    expected = numpy.clip((values.astype(numpy.float64) - low) * 255 / 2_000_000, 0, 255).astype(numpy.uint8)
    assert numpy.array_equal(pixels(rendered.content)[2], expected)
    preview = pixels(isengard.client.get(f"/instances/{instance}/preview").content)[2]  # the whole 32-bit range
    assert preview.min() == 0 and preview.max() == 255 and preview[3, 4] == 255
    uint16 = pixels(isengard.client.get(f"/instances/{instance}/image-uint16").content)[2]
    assert numpy.array_equal(uint16, numpy.clip(values.astype(numpy.int64), 0, 65535))


def with_lookup_tables(keep_window: bool, modality_lut: bool) -> bytes:
    """SignedCT.dcm given a VOI LUT sequence (an inverting ramp), with or without its window, or a
    modality LUT sequence in place of its rescale."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    dataset = pydicom.dcmread(SAMPLES / "SignedCT.dcm")
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    lut = Dataset()
    if modality_lut:
        del dataset.RescaleIntercept, dataset.RescaleSlope
        lut.LUTDescriptor, lut.ModalityLUTType = [4096, 0, 16], "HU"
        lut.LUTData = (numpy.arange(4096, dtype=numpy.uint16) * 2).tobytes()
        dataset.ModalityLUTSequence = [lut]
    else:
        if not keep_window:
            del dataset.WindowCenter, dataset.WindowWidth
        lut.LUTDescriptor, lut.LUTData = [256, 0, 8], (255 - numpy.arange(256, dtype=numpy.uint16)).tobytes()
        dataset.VOILUTSequence = [lut]
    output = io.BytesIO()
    dataset.save_as(output)
    return output.getvalue()


@pytest.mark.parametrize("keep_window, modality_lut", [(False, False), (True, False), (True, True)])
def test_lookup_table_sequences_are_ignored_as_by_orthanc(isengard, orthanc, keep_window, modality_lut):  # noqa: F811
    """Orthanc 1.10.1 renders with the window (or the stored range) and the rescale, never through a
    VOI LUT or modality LUT sequence: Isengard's images and arrays are the same."""
    data = with_lookup_tables(keep_window, modality_lut)
    instance = isengard.client.post("/instances", content=data).json()["ID"]
    assert orthanc.client.post("/instances", content=data).json()["ID"] == instance
    for route in [*ROUTES, "numpy"]:
        ours, theirs = (server.client.get(f"/instances/{instance}/{route}").content for server in (isengard, orthanc))
        if route == "numpy":
            assert numpy.array_equal(numpy.load(io.BytesIO(ours)), numpy.load(io.BytesIO(theirs)))
        else:
            assert numpy.array_equal(pixels(ours)[2], pixels(theirs)[2]), route
