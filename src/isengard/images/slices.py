"""The order of the slices of a series, as Orthanc 1.10.1 gives it (/series/{id}/ordered-slices and
/numpy), from the main DICOM tags of the series and of its instances, without reading any file.

A series of several instances that all have a position is a volume when the series has an
orientation, no instance's orientation leans away from it and no two positions coincide along its
normal: its instances are sorted along that normal. Any other series is a sequence, sorted by
InstanceNumber (ImageIndex where there is none); an instance without either leaves it unordered.
Ties keep the order in which the instances arrived. Each instance gives one slice per frame."""

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydicom.tag import Tag

from ..dicom.tags import IMAGE_INDEX, INSTANCE_NUMBER
from ..errors import ErrorCode, IsengardError

IMAGE_POSITION = Tag("ImagePositionPatient")
IMAGE_ORIENTATION = Tag("ImageOrientationPatient")
NUMBER_OF_FRAMES = Tag("NumberOfFrames")

# Orthanc's answers at the boundary: coordinates read as single precision, two values equal within
# ten times its epsilon (positions 1.2 nm apart are one, 1.3 nm apart two).
FLOAT_TOLERANCE = 10 * 2.0 ** -23
UNSIGNED = re.compile(r"[+-]?[0-9]+")

Instance = TypeVar("Instance")
Vector = tuple[float, float, float]


@dataclass(frozen=True)
class OrderedSlices(Generic[Instance]):
    volume: bool
    instances: list[tuple[Instance, int]]  # in order, each with its number of frames


def order_slices(series_orientation: str | None,
                 instances: list[tuple[Instance, Mapping[int, str]]]) -> OrderedSlices[Instance]:
    """`instances`: each with its main DICOM tags, in the order they arrived."""
    normal = _normal(series_orientation)
    volume = _sorted_by_position(normal, instances) if normal and len(instances) > 1 else None
    if volume is not None:
        return _with_frames(True, volume)
    return _with_frames(False, _sorted_by_number(instances) if len(instances) > 1 else instances)


def _with_frames(volume: bool, ordered: list[tuple[Instance, Mapping[int, str]]]) -> OrderedSlices[Instance]:
    return OrderedSlices(volume, [(instance, _frames(tags)) for instance, tags in ordered])


def _sorted_by_position(normal: Vector, instances: list[tuple[Instance, Mapping[int, str]]]) -> list | None:
    """The instances along `normal`, or None if they do not make a volume."""
    depths = []
    for _instance, tags in instances:
        position = _floats(tags.get(IMAGE_POSITION), 3)
        own_normal = _normal(tags.get(IMAGE_ORIENTATION))
        if position is None or (own_normal is not None and not _parallel(normal, own_normal)):
            return None
        depths.append(_dot(normal, position))
    order = sorted(range(len(instances)), key=depths.__getitem__)
    if any(abs(depths[b] - depths[a]) <= FLOAT_TOLERANCE for a, b in zip(order, order[1:])):
        return None
    return [instances[i] for i in order]


def _sorted_by_number(instances: list[tuple[Instance, Mapping[int, str]]]) -> list:
    numbers = [_number(tags) for _instance, tags in instances]
    if None in numbers:
        raise IsengardError(ErrorCode.CANNOT_ORDER_SLICES, "An instance of the series has no InstanceNumber or ImageIndex")
    return [instances[i] for i in sorted(range(len(instances)), key=numbers.__getitem__)]


def _number(tags: Mapping[int, str]) -> int | None:
    """InstanceNumber if the instance has one, even empty (Orthanc does not fall back then), else
    ImageIndex; negative numbers sort after the others, as Orthanc reads them unsigned."""
    value = tags.get(INSTANCE_NUMBER, tags.get(IMAGE_INDEX))
    if value is None or not UNSIGNED.fullmatch(value.strip()):
        return None
    number = int(value)
    return number if number >= 0 else 2 ** 64 + number


def _frames(tags: Mapping[int, str]) -> int:
    """NumberOfFrames, 0 included; 1 when absent or not a number."""
    value = tags.get(NUMBER_OF_FRAMES, "").strip()
    return int(value) if UNSIGNED.fullmatch(value) and int(value) >= 0 else 1


def _normal(orientation: str | None) -> Vector | None:
    """The normal of an ImageOrientationPatient (the cross product of its row and column), not
    normalized; None if the value is not six numbers or its vectors are parallel."""
    values = _floats(orientation, 6)
    if values is None:
        return None
    (a, b, c), (d, e, f) = values[:3], values[3:]
    normal = (b * f - c * e, c * d - a * f, a * e - b * d)
    return None if _dot(normal, normal) ** 0.5 <= FLOAT_TOLERANCE else normal


def _parallel(u: Vector, v: Vector) -> bool:
    """Whether u and v point the same way or opposite ways."""
    cosine = _dot(u, v) / (_dot(u, u) * _dot(v, v)) ** 0.5
    return abs(abs(cosine) - 1) <= FLOAT_TOLERANCE


def _floats(value: str | None, count: int) -> tuple | None:
    parts = (value or "").split("\\")
    if len(parts) != count:
        return None
    try:
        return tuple(_single_precision(float(part)) for part in parts)
    except (ValueError, OverflowError):  # OverflowError: beyond single precision
        return None


def _single_precision(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _dot(u: tuple, v: tuple) -> float:
    return sum(a * b for a, b in zip(u, v))
