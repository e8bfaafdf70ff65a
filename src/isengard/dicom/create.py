"""New instances made from JSON (/tools/create-dicom): the tags given, the identifiers and dates
Orthanc fills in, the tags inherited from a parent resource, and a picture or a PDF as content."""

import io
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ..errors import ErrorCode, IsengardError, bad_request
from .charsets import ENCODINGS
from .tags import SOP_INSTANCE_UID, SERIES_INSTANCE_UID, STUDY_INSTANCE_UID, format_tag, parse_tag

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
# Identifiers a request sets only with "Force": they decide where the instance goes.
FORCED_TAGS = frozenset({STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID})
NOW_DATES = ("InstanceCreation", "Study", "Series", "Acquisition", "Content")  # ...Date and ...Time set to now


@dataclass(frozen=True)
class Picture:
    """Native pixel data (see images/pictures.py)."""

    rows: int
    columns: int
    samples: int
    bits: int
    pixels: bytes


def new_instance(tags: Mapping[str, Any], encoding: str, inherited: Mapping[BaseTag, str], force: bool) -> Dataset:
    """The dataset of a new instance: `tags` (keywords or 'gggg,eeee', sequences as lists of
    objects), over the `inherited` tags of a parent resource, which they may not change."""
    given = json_dataset(tags)
    overridden = sorted(str(given[tag].keyword or tag) for tag in given.keys() if tag in inherited)
    if overridden:
        raise bad_request(f"Trying to override a value inherited from a parent module: {', '.join(overridden)}")
    forced = [given[tag].keyword for tag in given.keys() if tag in FORCED_TAGS]
    if forced and not force:
        raise bad_request(f"Use \"Force\": true to set {', '.join(forced)}")
    dataset = Dataset()
    dataset.SpecificCharacterSet = ENCODINGS[encoding][1]
    now = datetime.now()
    for name in NOW_DATES:
        setattr(dataset, f"{name}Date", now.strftime("%Y%m%d"))
        setattr(dataset, f"{name}Time", now.strftime("%H%M%S.%f"))
    dataset.PatientID = str(uuid.uuid4())
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID = (generate_uid() for _ in range(3))
    dataset.SOPClassUID = SECONDARY_CAPTURE
    for tag, value in inherited.items():
        dataset[tag] = set_json_value(Dataset(), tag, value)[tag]
    dataset.update(given)
    return dataset


def add_picture(dataset: Dataset, picture: Picture) -> None:
    dataset.Rows, dataset.Columns, dataset.SamplesPerPixel = picture.rows, picture.columns, picture.samples
    dataset.BitsAllocated = dataset.BitsStored = picture.bits
    dataset.HighBit = picture.bits - 1
    dataset.PixelRepresentation = 0
    dataset.PhotometricInterpretation = "RGB" if picture.samples == 3 else "MONOCHROME2"
    if picture.samples == 3:
        dataset.PlanarConfiguration = 0
    dataset.PixelData = picture.pixels
    dataset["PixelData"].VR = "OW" if picture.bits > 8 else "OB"


def add_pdf(dataset: Dataset, pdf: bytes) -> None:
    if not pdf.startswith(b"%PDF"):
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, "The content is not a PDF document")
    dataset.SOPClassUID = ENCAPSULATED_PDF
    dataset.setdefault("Modality", "OT")
    dataset.ConversionType = "WSD"
    dataset.MIMETypeOfEncapsulatedDocument = "application/pdf"
    dataset.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)


def file_bytes(dataset: Dataset) -> bytes:
    """The dataset as a DICOM file, in explicit VR little endian."""
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    output = io.BytesIO()
    dataset.save_as(output, enforce_file_format=True)
    return output.getvalue()


def json_dataset(tags: Mapping[str, Any]) -> Dataset:
    """A dataset of JSON tags: names or numbers, strings, lists of objects for sequences."""
    dataset = Dataset()
    for name, value in tags.items():
        set_json_value(dataset, json_tag(name), value)
    return dataset


def json_tag(name: str) -> BaseTag:
    """A tag named in a JSON request: a keyword, or 'gggg,eeee' or 'gggg-eeee'."""
    try:
        return parse_tag(name.replace("-", ","))
    except ValueError:
        raise IsengardError(ErrorCode.UNKNOWN_DICOM_TAG, f"Unknown DICOM tag: {name}", 400) from None


def set_json_value(dataset: Dataset, tag: BaseTag, value: Any) -> Dataset:
    """Set `tag` to a JSON value: a string (or null), or a list of objects for a sequence."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = "UN" if Tag(tag).is_private and Tag(tag).element >= 0x1000 else "LO"
    if vr == "SQ":
        if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
            raise bad_request(f"The value of the sequence {tag} must be a list of objects")
        dataset.add_new(tag, vr, [json_dataset(item) for item in value])
    elif value is None or isinstance(value, str):
        dataset.add_new(tag, vr, (value or "").encode("latin-1", "replace") if vr in ("OB", "OW", "UN") else value or "")
    else:
        raise IsengardError(ErrorCode.BAD_PARAMETER_TYPE, f"Bad parameter type for tag {format_tag(tag)}")
    return dataset
