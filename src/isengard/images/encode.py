"""Images encoded as the REST API answers them: PNG, JPEG or PAM, chosen by `Accept`. 8-bit images
(greyscale or RGB) go to any of them, 16-bit greyscale to PNG and PAM (int16 as its two's
complement bit pattern, as Orthanc writes it)."""

import io

import numpy
from PIL import Image

from ..errors import ErrorCode, IsengardError
from .formats import JPEG, PAM

def encode(image: numpy.ndarray, media_type: str, quality: int = 90) -> bytes:
    """`image`: rows × columns (greyscale, 8 or 16 bits) or rows × columns × 3 (RGB, 8 bits)."""
    if image.dtype == numpy.int16:
        image = image.view(numpy.uint16)
    if media_type == PAM:
        return _pam(image)
    if image.dtype != numpy.uint8 and media_type == JPEG:
        raise IsengardError(ErrorCode.NOT_ACCEPTABLE, "A 16-bit image cannot be written as JPEG")
    output = io.BytesIO()
    picture = Image.fromarray(image)
    if media_type == JPEG:
        picture.save(output, "JPEG", quality=quality)
    else:
        picture.save(output, "PNG", compress_level=1)  # a preview is read once: speed over size
    return output.getvalue()


def _pam(image: numpy.ndarray) -> bytes:
    rows, columns = image.shape[:2]
    depth, kind = (3, "RGB") if image.ndim == 3 else (1, "GRAYSCALE")
    maximum = 255 if image.dtype == numpy.uint8 else 65535
    header = f"P7\nWIDTH {columns}\nHEIGHT {rows}\nDEPTH {depth}\nMAXVAL {maximum}\nTUPLTYPE {kind}\nENDHDR\n"
    return header.encode() + image.astype(image.dtype.newbyteorder(">"), copy=False).tobytes()
