"""Errors with the codes, messages and HTTP statuses of Orthanc's REST API."""

from enum import Enum


class ErrorCode(Enum):
    """Orthanc's error codes: (OrthancStatus, message, HTTP status)."""

    INTERNAL_ERROR = (-1, "Internal error", 500)
    NOT_IMPLEMENTED = (2, "Not implemented yet", 501)
    PARAMETER_OUT_OF_RANGE = (3, "Parameter out of range", 400)
    BAD_PARAMETER_TYPE = (5, "Bad type for a parameter", 400)
    BAD_SEQUENCE_OF_CALLS = (6, "Bad sequence of calls", 400)
    INEXISTENT_ITEM = (7, "Accessing an inexistent item", 404)
    BAD_REQUEST = (8, "Bad request", 400)
    NETWORK_PROTOCOL = (9, "Error in the network protocol", 500)
    DATABASE = (11, "Error in the database engine", 500)
    URI_SYNTAX = (12, "Badly formatted URI", 400)
    INEXISTENT_FILE = (13, "Inexistent file", 404)
    CANNOT_WRITE_FILE = (14, "Cannot write to file", 403)
    BAD_FILE_FORMAT = (15, "Bad file format", 400)
    UNKNOWN_RESOURCE = (17, "Unknown resource", 404)
    FULL_STORAGE = (19, "The file storage is full", 507)
    CORRUPTED_FILE = (20, "Corrupted file (e.g. inconsistent MD5 hash)", 500)
    INEXISTENT_TAG = (21, "Inexistent tag", 404)
    READ_ONLY = (22, "Cannot modify a read-only data structure", 403)
    INCOMPATIBLE_IMAGE_FORMAT = (23, "Incompatible format of the images", 500)
    INCOMPATIBLE_IMAGE_SIZE = (24, "Incompatible size of the images", 500)
    UNKNOWN_DICOM_TAG = (27, "Unknown DICOM tag", 404)
    BAD_JSON = (28, "Cannot parse a JSON document", 400)
    UNAUTHORIZED = (29, "Bad credentials were provided to an HTTP request", 401)
    NOT_ACCEPTABLE = (34, "Cannot send a response which is acceptable according to the Accept HTTP header", 406)
    CANCELED_JOB = (37, "This job was canceled", 500)
    REVISION = (43, "A bad revision number was provided, which might indicate conflict between multiple writers", 409)
    FORBIDDEN_ACCESS = (2000, "Access to a resource is forbidden", 403)
    NO_PRESENTATION_CONTEXT = (2015, "DicomUserConnection: No acceptable presentation context for modality", 500)
    NO_CFIND_HANDLER = (2016, "DicomUserConnection: The C-FIND command is not supported by the remote SCP", 500)
    NO_CMOVE_HANDLER = (2017, "DicomUserConnection: The C-MOVE command is not supported by the remote SCP", 500)
    CANNOT_ORDER_SLICES = (2040, "Unable to order the slices of the series", 500)
    UNSUPPORTED_MEDIA_TYPE = (3000, "Unsupported media type", 415)

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]

    @property
    def http_status(self) -> int:
        return self.value[2]


class IsengardError(Exception):
    """An error that the REST API reports with Orthanc's JSON error body."""

    def __init__(self, code: ErrorCode, details: str = "", http_status: int | None = None):
        super().__init__(details or code.message)
        self.code = code
        self.details = details
        self.http_status = http_status or code.http_status


def unknown_resource(public_id: str) -> IsengardError:
    return IsengardError(ErrorCode.UNKNOWN_RESOURCE, f"Unknown resource: {public_id}")


def bad_request(details: str) -> IsengardError:
    return IsengardError(ErrorCode.BAD_REQUEST, details)
