"""PNG and JPEG pictures turned into pixel data, for /tools/create-dicom (run in the image processes)."""

import io
from typing import Any

import numpy
from PIL import Image, UnidentifiedImageError

from ..errors import ErrorCode, IsengardError

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def picture_pixels(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The pixel description (rows, columns, samples per pixel, bits) and the native pixel data of
    a PNG or JPEG: greyscale stays greyscale (8 or 16 bits), anything else becomes 8-bit RGB (an
    alpha channel or a palette is flattened, as Orthanc does)."""
    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise IsengardError(ErrorCode.BAD_FILE_FORMAT, f"Cannot read the image: {exc}") from None
    if picture.mode in SIXTEEN_BIT_MODES:
        pixels = numpy.asarray(picture).astype("<u2")
    else:
        pixels = numpy.asarray(picture.convert("L" if picture.mode in ("L", "LA", "1") else "RGB"))
    samples = 3 if pixels.ndim == 3 else 1
    description = {"rows": pixels.shape[0], "columns": pixels.shape[1], "samples": samples,
                   "bits": 8 * pixels.dtype.itemsize}
    return description, pixels.tobytes()
