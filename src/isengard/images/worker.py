"""The program of an image process (see processes.py). Requests on a stored file (its frames,
rendered, encoded, as arrays or raw) read it from the storage area, and the last files read stay
parsed: a viewer asks for the frames of one instance in turn; the frames of a series' files make one
array. Requests on a payload transcode a DICOM file (transcode.py) or turn a PNG or JPEG into pixel
data (pictures.py)."""

import io
import logging
from collections import OrderedDict
from typing import Any

import numpy
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from ..errors import ErrorCode, IsengardError
from ..processes import Message, serve
from ..storage.area import decompress_data
from .decode import decode_frame, declared_frame_count, frame_count, raw_frame, raw_media_type
from .encode import encode
from .pictures import picture_pixels
from .render import CLIPPED_TYPES, Rendering, clipped, matlab, preview, rendered, values
from .transcode import transcode

log = logging.getLogger(__name__)

PARSED_FILES = 4

_parsed: OrderedDict[str, Dataset] = OrderedDict()


def main(idle_exit: float) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(asctime)s %(name)s (image process)] %(message)s")
    serve(handle, idle_exit)


def handle(request: dict[str, Any], payload: bytes) -> Message:
    try:
        if request["operation"] == "transcode":
            return {}, transcode(payload, request["syntax"], request["quality"])
        if request["operation"] == "picture":
            return picture_pixels(payload)
        if request["operation"] == "series-numpy":
            return {}, _series_numpy(request["files"], request["rescale"], request["compress"])
        return _answer(request)
    except IsengardError as exc:
        return {"error": exc.code.name, "details": exc.details}, b""
    except Exception as exc:  # the process goes on with the next request
        log.exception("Image request failed: %s", request)
        return {"error": ErrorCode.INTERNAL_ERROR.name, "details": str(exc)}, b""


def _answer(request: dict[str, Any]) -> Message:
    dataset = _dataset(request["path"], request["compressed"])
    operation = request["operation"]
    if operation == "frames":
        return {"frames": declared_frame_count(dataset)}, b""
    if operation == "raw":
        return {"media_type": raw_media_type(dataset)}, raw_frame(dataset, request["frame"])
    if operation == "numpy":
        return {}, _numpy(dataset, request["frames"], request["rescale"], request["compress"])
    if operation == "matlab":
        return {}, matlab(decode_frame(dataset, request["frame"]))
    frame = _image_frame(dataset, request["frame"])
    if operation == "preview":
        image = preview(frame, dataset)
    elif operation == "rendered":
        image = rendered(frame, dataset, request["frame"], Rendering(**request["rendering"]))
    elif operation in CLIPPED_TYPES:
        image = clipped(frame, operation)
    else:
        raise IsengardError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown image operation: {operation}")
    return {}, encode(image, request["media_type"], request["quality"])


def _image_frame(dataset: Dataset, index: int) -> numpy.ndarray:
    """The frame to render. Beyond the last frame, Orthanc 1.10.1 answers its images 404 for an
    uncompressed file and 415 for a compressed one (where its decoder fails first); the arrays 400."""
    try:
        return decode_frame(dataset, index)
    except IsengardError as exc:
        if exc.code is not ErrorCode.PARAMETER_OUT_OF_RANGE:
            raise
        compressed = dataset.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian).is_compressed
        code = ErrorCode.UNSUPPORTED_MEDIA_TYPE if compressed else ErrorCode.INEXISTENT_ITEM
        raise IsengardError(code, exc.details) from None


def _numpy(dataset: Dataset, frames: list[int] | None, rescale: bool, compress: bool) -> bytes:
    """The frames as a .npy file (an .npz with `compress`): frames × rows × columns × samples,
    or one frame without the first dimension when `frames` names one."""
    indices = range(frame_count(dataset)) if frames is None else frames
    array = numpy.stack([values(decode_frame(dataset, index), dataset, index, rescale) for index in indices])
    if frames is not None and len(frames) == 1:
        array = array[0]
    return _npy(array, compress)


def _series_numpy(files: list[dict[str, Any]], rescale: bool, compress: bool) -> bytes:
    """The frames of several files in turn (`frames` of each) as one .npy (.npz): frames × rows ×
    columns × samples. Their stored pixels must share one format and one size, as Orthanc wants,
    even where the rescale would make their values alike."""
    arrays, first = [], None
    for file in files:
        dataset = _dataset(file["path"], file["compressed"])
        for index in range(file["frames"]):
            frame = decode_frame(dataset, index)
            first = frame if first is None else first
            if (frame.dtype, frame.ndim) != (first.dtype, first.ndim):
                raise IsengardError(ErrorCode.INCOMPATIBLE_IMAGE_FORMAT, "The pixel format of the frames varies across the instances")
            if frame.shape != first.shape:
                raise IsengardError(ErrorCode.INCOMPATIBLE_IMAGE_SIZE, "The size of the frames varies across the instances")
            arrays.append(values(frame, dataset, index, rescale))
    return _npy(numpy.stack(arrays), compress)


def _npy(array: numpy.ndarray, compress: bool) -> bytes:
    output = io.BytesIO()
    if compress:
        numpy.savez_compressed(output, array)
    else:
        numpy.save(output, array)
    return output.getvalue()


def _dataset(path: str, compressed: bool) -> Dataset:
    dataset = _parsed.get(path)
    if dataset is not None:
        _parsed.move_to_end(path)
        return dataset
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise IsengardError(ErrorCode.INEXISTENT_FILE, f"Missing file in the storage area: {path}") from None
    try:
        dataset = pydicom.dcmread(io.BytesIO(decompress_data(data) if compressed else data), force=True)
    except Exception as exc:  # a file that was valid at ingest: the storage area is damaged
        raise IsengardError(ErrorCode.CORRUPTED_FILE, f"Cannot read the stored file {path}: {exc}") from None
    _parsed[path] = dataset
    if len(_parsed) > PARSED_FILES:
        _parsed.popitem(last=False)
    return dataset
