"""The image formats of the REST API, chosen by the Accept header."""

from ..errors import ErrorCode, IsengardError

PNG, JPEG, PAM = "image/png", "image/jpeg", "image/x-portable-arbitrarymap"
FORMATS = (PNG, JPEG, PAM)


def negotiate(accept: str) -> str:
    """The first format of the Accept header that Isengard writes; PNG when any image will do."""
    for item in accept.split(","):
        media_type = item.split(";", 1)[0].strip().lower()
        if media_type in FORMATS:
            return media_type
        if media_type in ("", "*/*", "image/*"):
            return PNG
    raise IsengardError(ErrorCode.NOT_ACCEPTABLE, f"No image format of the Accept header is supported: {accept}")
