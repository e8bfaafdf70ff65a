"""Images encoded as the REST API answers them: PNG, JPEG or PAM, chosen by `Accept`. 8-bit images
(greyscale or RGB) go to any of them, 16-bit greyscale to PNG and PAM (int16 as its two's
complement bit pattern, as Orthanc writes it)."""

import io

import numpy
from PIL import Image

from ..errors import ErrorCode, IsengardError
from .formats import JPEG, PAM
from .png import GREYSCALE, RGB, png_file

PNG_UP_FILTER = 2

def encode(image: numpy.ndarray, media_type: str, quality: int = 90) -> bytes:
    """`image`: rows × columns (greyscale, 8 or 16 bits) or rows × columns × 3 (RGB, 8 bits)."""
    if image.dtype == numpy.int16:
        image = image.view(numpy.uint16)
    if media_type == PAM:
        return _pam(image)
    if image.dtype != numpy.uint8 and media_type == JPEG:
        raise IsengardError(ErrorCode.NOT_ACCEPTABLE, "A 16-bit image cannot be written as JPEG")
    if media_type != JPEG:
        return _png(image)
    output = io.BytesIO()
    Image.fromarray(image).save(output, "JPEG", quality=quality)
    return output.getvalue()


def _png(image: numpy.ndarray) -> bytes:
    """A PNG written here rather than by Pillow, whose adaptive filters took 31 instead of 13 ms
    for a 975×743 colour frame, for a file 5% smaller: every row is filtered by "Up" (its
    difference with the row above) and deflated at level 1, as a preview is read once."""
    rows, columns = image.shape[:2]
    sixteen_bits = image.dtype != numpy.uint8
    samples = (image.astype(">u2") if sixteen_bits else image).reshape(rows, -1).view(numpy.uint8)
    lines = numpy.empty((rows, samples.shape[1] + 1), numpy.uint8)
    lines[:, 0] = PNG_UP_FILTER
    lines[0, 1:] = samples[0]
    numpy.subtract(samples[1:], samples[:-1], out=lines[1:, 1:])  # modulo 256, as PNG wants
    return png_file(columns, rows, 16 if sixteen_bits else 8, RGB if image.ndim == 3 else GREYSCALE, lines.tobytes(), 1)


def _pam(image: numpy.ndarray) -> bytes:
    rows, columns = image.shape[:2]
    depth, kind = (3, "RGB") if image.ndim == 3 else (1, "GRAYSCALE")
    maximum = 255 if image.dtype == numpy.uint8 else 65535
    header = f"P7\nWIDTH {columns}\nHEIGHT {rows}\nDEPTH {depth}\nMAXVAL {maximum}\nTUPLTYPE {kind}\nENDHDR\n"
    return header.encode() + image.astype(image.dtype.newbyteorder(">"), copy=False).tobytes()
