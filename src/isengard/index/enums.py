"""Numbering of metadata and change types, as Orthanc's (so its names and numbers match)."""

from enum import Enum, IntEnum


class MetadataType(IntEnum):
    INDEX_IN_SERIES = 1
    RECEPTION_DATE = 2
    REMOTE_AET = 3
    EXPECTED_NUMBER_OF_INSTANCES = 4
    MODIFIED_FROM = 5
    ANONYMIZED_FROM = 6
    LAST_UPDATE = 7
    ORIGIN = 8
    TRANSFER_SYNTAX = 9
    SOP_CLASS_UID = 10
    REMOTE_IP = 11
    CALLED_AET = 12
    HTTP_USERNAME = 13
    PIXEL_DATA_OFFSET = 14
    MAIN_DICOM_TAGS_SIGNATURE = 15
    START_USER = 1024
    END_USER = 65535


METADATA_NAMES: dict[int, str] = {
    MetadataType.INDEX_IN_SERIES: "IndexInSeries",
    MetadataType.RECEPTION_DATE: "ReceptionDate",
    MetadataType.REMOTE_AET: "RemoteAET",
    MetadataType.EXPECTED_NUMBER_OF_INSTANCES: "ExpectedNumberOfInstances",
    MetadataType.MODIFIED_FROM: "ModifiedFrom",
    MetadataType.ANONYMIZED_FROM: "AnonymizedFrom",
    MetadataType.LAST_UPDATE: "LastUpdate",
    MetadataType.ORIGIN: "Origin",
    MetadataType.TRANSFER_SYNTAX: "TransferSyntax",
    MetadataType.SOP_CLASS_UID: "SopClassUid",
    MetadataType.REMOTE_IP: "RemoteIP",
    MetadataType.CALLED_AET: "CalledAET",
    MetadataType.HTTP_USERNAME: "HttpUsername",
    MetadataType.PIXEL_DATA_OFFSET: "PixelDataOffset",
    MetadataType.MAIN_DICOM_TAGS_SIGNATURE: "MainDicomTagsSignature",
}


class ChangeType(str, Enum):
    """Entries of the changes log; the value is the name the REST API shows."""

    COMPLETED_SERIES = "CompletedSeries"
    DELETED = "Deleted"
    NEW_CHILD_INSTANCE = "NewChildInstance"
    NEW_INSTANCE = "NewInstance"
    NEW_PATIENT = "NewPatient"
    NEW_SERIES = "NewSeries"
    NEW_STUDY = "NewStudy"
    ANONYMIZED_STUDY = "AnonymizedStudy"
    ANONYMIZED_SERIES = "AnonymizedSeries"
    MODIFIED_STUDY = "ModifiedStudy"
    MODIFIED_SERIES = "ModifiedSeries"
    ANONYMIZED_PATIENT = "AnonymizedPatient"
    MODIFIED_PATIENT = "ModifiedPatient"
    STABLE_PATIENT = "StablePatient"
    STABLE_STUDY = "StableStudy"
    STABLE_SERIES = "StableSeries"
    UPDATED_ATTACHMENT = "UpdatedAttachment"
    UPDATED_METADATA = "UpdatedMetadata"


class GlobalProperty(IntEnum):
    DATABASE_SCHEMA_VERSION = 1
    ANONYMIZATION_SEQUENCE = 3
    JOBS_REGISTRY = 5
    MODALITIES = 20
    PEERS = 21
    DATABASE_IDENTIFIER = 22
    ACCEPTED_TRANSFER_SYNTAXES = 30
