"""Frames turned into the images of the REST API, with Orthanc's arithmetic (checked against
Orthanc 1.10.1 on the samples: see tests/test_images_rest.py).

- preview: the frame's full range of stored values stretched over 0-255 (rounded), MONOCHROME1
  inverted so that it shows as MONOCHROME2;
- image-uint8, image-uint16, image-int16: the stored values clipped to the type (greyscale only);
- rendered: the rescaled values through a window (the one asked for, else the first preset of the
  frame, else the range of the stored bits), then fitted into `width` × `height` if asked; the
  rescale and the presets of an enhanced multi-frame instance are those of the frame's functional groups.
"""

from dataclasses import dataclass
from typing import Any

import numpy
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..errors import ErrorCode, IsengardError

CLIPPED_TYPES = {"image-uint8": numpy.uint8, "image-uint16": numpy.uint16, "image-int16": numpy.int16}


@dataclass(frozen=True)
class Rendering:
    """The options of /rendered."""

    window_center: float | None = None
    window_width: float | None = None
    width: int = 0  # 0: as the frame, or as the other dimension asks
    height: int = 0
    smooth: bool = False


def preview(frame: numpy.ndarray, dataset: Dataset) -> numpy.ndarray:
    if frame.ndim == 3:
        return _eight_bits(frame)
    low, high = float(frame.min()), float(frame.max())
    stretched = numpy.zeros(frame.shape, numpy.uint8) if high == low else \
        numpy.floor((frame - low) * (255 / (high - low)) + 0.5).astype(numpy.uint8)
    return _as_monochrome2(stretched, dataset)


def clipped(frame: numpy.ndarray, kind: str) -> numpy.ndarray:
    if frame.ndim == 3:
        raise IsengardError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"A colour frame has no {kind} version")
    dtype = CLIPPED_TYPES[kind]
    limits = numpy.iinfo(dtype)
    return numpy.clip(frame, limits.min, limits.max).astype(dtype)


def rendered(frame: numpy.ndarray, dataset: Dataset, index: int, options: Rendering) -> numpy.ndarray:
    """Frame `index` of the dataset, rendered."""
    if frame.ndim == 3:
        image = _eight_bits(frame)
    else:
        rescaled = _rescaled(frame, dataset, index, numpy.float64)
        center, width = _window(dataset, index, options)
        windowed = numpy.floor((rescaled - (center - width / 2)) * 255 / width)  # in this order, as Orthanc rounds
        image = _as_monochrome2(numpy.clip(windowed, 0, 255).astype(numpy.uint8), dataset)
    return _resized(image, options)


def values(frame: numpy.ndarray, dataset: Dataset, index: int, rescale: bool) -> numpy.ndarray:
    """Frame `index` for /numpy: rows × columns × samples, greyscale rescaled to float32 if asked
    (the functional groups' rescale for an enhanced multi-frame), else as stored."""
    if frame.ndim == 2:
        if rescale:
            frame = _rescaled(frame, dataset, index, numpy.float32)
        frame = frame[:, :, numpy.newaxis]
    return frame


def _rescaled(frame: numpy.ndarray, dataset: Dataset, index: int, dtype: type) -> numpy.ndarray:
    slope = _frame_value(dataset, index, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _frame_value(dataset, index, "PixelValueTransformationSequence", "RescaleIntercept")
    return frame.astype(dtype) * dtype(slope or 1.0) + dtype(intercept or 0.0)


def matlab(frame: numpy.ndarray) -> bytes:
    """A frame's stored values as a MATLAB/Octave expression, as Orthanc writes it: a matrix, or
    for colour the samples in file order, reshaped and permuted to rows × columns × 3."""
    if frame.ndim == 3:
        rows, columns = frame.shape[:2]
        samples = " ".join(map(str, frame.reshape(-1).tolist()))
        return f"double(permute(reshape([ {samples} ], [ 3 {columns} {rows} ]), [ 3 2 1 ]))".encode()
    matrix = " ; ".join(" ".join(map(str, row)) for row in frame.tolist())
    return f"double([ {matrix} ])".encode()


def _window(dataset: Dataset, index: int, options: Rendering) -> tuple[float, float]:
    preset = (_frame_value(dataset, index, "FrameVOILUTSequence", "WindowCenter"),
              _frame_value(dataset, index, "FrameVOILUTSequence", "WindowWidth"))
    center = options.window_center if options.window_center is not None else preset[0]
    width = options.window_width if options.window_width is not None else preset[1]
    if center is None or width is None:  # the range of the stored bits, as Orthanc 1.10.1
        width = float(2 ** int(dataset.get("BitsStored") or 8))
        center = width / 2
    return center, max(width, 1.0)


def _frame_value(dataset: Dataset, index: int, group: str, keyword: str) -> float | None:
    """An attribute of frame `index`: from its functional group in an enhanced multi-frame
    instance, else from the groups shared by its frames, else from the dataset itself."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    shared = dataset.get("SharedFunctionalGroupsSequence") or []
    for groups in ([per_frame[index]] if index < len(per_frame) else []) + list(shared[:1]):
        items = groups.get(group) or []
        if items and keyword in items[0]:
            return _first(items[0].get(keyword))
    return _first(dataset.get(keyword))


def _first(value: Any) -> float | None:
    """The first value of a window element (the first preset), if any."""
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _resized(image: numpy.ndarray, options: Rendering) -> numpy.ndarray:
    rows, columns = image.shape[:2]
    if not options.width and not options.height:
        return image
    scale = min(options.width / columns if options.width else float("inf"),
                options.height / rows if options.height else float("inf"))
    size = (max(round(columns * scale), 1), max(round(rows * scale), 1))
    from PIL import Image

    picture = Image.fromarray(image)
    return numpy.asarray(picture.resize(size, Image.Resampling.BILINEAR if options.smooth else Image.Resampling.NEAREST))


def _as_monochrome2(image: numpy.ndarray, dataset: Dataset) -> numpy.ndarray:
    if str(dataset.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        return 255 - image
    return image


def _eight_bits(frame: numpy.ndarray) -> numpy.ndarray:
    if frame.dtype == numpy.uint8:
        return frame
    return (frame.astype(numpy.float64) * (255 / max(float(frame.max()), 1))).astype(numpy.uint8)
