"""Main DICOM tags: the subset of each level's tags kept in the index.

The lists follow Orthanc's manual (faq/main-dicom-tags.rst, 1.12.5). The study
level also keeps a copy of the patient tags, so that a study can be found by
patient attributes without a join.
"""

from functools import lru_cache

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.tag import BaseTag, Tag

from .levels import Level

PATIENT_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs")

STUDY_TAGS = (
    "StudyDate",
    "StudyTime",
    "StudyID",
    "StudyDescription",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureDescription",
    "InstitutionName",
    "RequestingPhysician",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
)

SERIES_TAGS = (
    "SeriesDate",
    "SeriesTime",
    "Modality",
    "Manufacturer",
    "StationName",
    "SeriesDescription",
    "BodyPartExamined",
    "SequenceName",
    "ProtocolName",
    "SeriesNumber",
    "CardiacNumberOfImages",
    "ImagesInAcquisition",
    "NumberOfTemporalPositions",
    "NumberOfSlices",
    "NumberOfTimeSlices",
    "SeriesInstanceUID",
    "ImageOrientationPatient",
    "SeriesType",
    "OperatorsName",
    "PerformedProcedureStepDescription",
    "AcquisitionDeviceProcessingDescription",
    "ContrastBolusAgent",
    "TimezoneOffsetFromUTC",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)

INSTANCE_TAGS = (
    "InstanceCreationDate",
    "InstanceCreationTime",
    "AcquisitionNumber",
    "ImageIndex",
    "InstanceNumber",
    "NumberOfFrames",
    "TemporalPositionIdentifier",
    "SOPInstanceUID",
    "ImagePositionPatient",
    "ImageComments",
    "ImageOrientationPatient",
)


def _tags(keywords: tuple[str, ...]) -> tuple[BaseTag, ...]:
    return tuple(Tag(tag_for_keyword(k)) for k in keywords)


# The tags stored in the index for each level (the study level includes the patient tags).
MAIN_DICOM_TAGS: dict[Level, tuple[BaseTag, ...]] = {
    Level.PATIENT: _tags(PATIENT_TAGS),
    Level.STUDY: _tags(STUDY_TAGS + PATIENT_TAGS),
    Level.SERIES: _tags(SERIES_TAGS),
    Level.INSTANCE: _tags(INSTANCE_TAGS),
}

# The tags each level shows as its own "MainDicomTags" in JSON answers.
OWN_MAIN_DICOM_TAGS: dict[Level, tuple[BaseTag, ...]] = {
    Level.PATIENT: _tags(PATIENT_TAGS),
    Level.STUDY: _tags(STUDY_TAGS),
    Level.SERIES: _tags(SERIES_TAGS),
    Level.INSTANCE: _tags(INSTANCE_TAGS),
}

PATIENT_ID = Tag(0x0010, 0x0020)
STUDY_INSTANCE_UID = Tag(0x0020, 0x000D)
SERIES_INSTANCE_UID = Tag(0x0020, 0x000E)
SOP_INSTANCE_UID = Tag(0x0008, 0x0018)
SOP_CLASS_UID = Tag(0x0008, 0x0016)
INSTANCE_NUMBER = Tag(0x0020, 0x0013)
IMAGE_INDEX = Tag(0x0054, 0x1330)
PIXEL_DATA = Tag(0x7FE0, 0x0010)
SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)

# The DICOM identifier that names a resource of each level.
IDENTIFIER_TAG: dict[Level, BaseTag] = {
    Level.PATIENT: PATIENT_ID,
    Level.STUDY: STUDY_INSTANCE_UID,
    Level.SERIES: SERIES_INSTANCE_UID,
    Level.INSTANCE: SOP_INSTANCE_UID,
}


def format_tag(tag: int) -> str:
    """'0010,0020': how Orthanc writes a tag in JSON keys."""
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


@lru_cache(maxsize=4096)
def tag_name(tag: int) -> str:
    """The keyword of a tag, or its 'gggg,eeee' form when the dictionary does not know it.
    (Cached: pydicom's look-up is slow, and JSON answers name the same few tags over and over.)"""
    return keyword_for_tag(tag) or format_tag(tag)


def parse_tag(text: str) -> BaseTag:
    """Accept a keyword ('PatientID'), '0010,0020', '00100020' or '(0010,0020)'."""
    text = text.strip().strip("()")
    if "," in text:
        group, element = text.split(",", 1)
        if len(group) == 4 and len(element) == 4:
            return Tag(int(group, 16), int(element, 16))
    elif len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        return Tag(int(text, 16))
    tag = tag_for_keyword(text)
    if tag is None:
        raise ValueError(f"Unknown DICOM tag: {text}")
    return Tag(tag)
