"""The server's side of the images: requests handed to the image processes (see worker.py)."""

import os
from typing import Any

from ..errors import ErrorCode, IsengardError
from ..processes import WorkerPool
from ..storage import StorageArea
from ..storage.area import CompressionType, FileInfo

# Image processes: two render two images at once (a large multi-frame does not hold up the
# previews behind it) without claiming more memory (about 80 MiB each while in use; each stops after
# a minute without a request). One alone already renders previews faster than Orthanc.
IMAGE_PROCESSES = min(os.cpu_count() or 1, 2)


class Images:
    def __init__(self, storage: StorageArea):
        self._storage = storage
        self._processes = WorkerPool("isengard.images.worker", IMAGE_PROCESSES)

    def frame_count(self, file: FileInfo) -> int:
        return self._call(file, {"operation": "frames"})[0]["frames"]

    def image(self, file: FileInfo, operation: str, frame: int, media_type: str, quality: int = 90,
              rendering: dict[str, Any] | None = None) -> bytes:
        """Frame `frame` of the file: `operation` is preview, rendered (with `rendering`, the
        fields of render.Rendering), image-uint8, image-uint16 or image-int16."""
        request = {"operation": operation, "frame": frame, "media_type": media_type, "quality": quality,
                   "rendering": rendering or {}}
        return self._call(file, request)[1]

    def numpy(self, file: FileInfo, frame: int | None, rescale: bool, compress: bool) -> bytes:
        """A .npy (or .npz) of one frame, or of all frames when `frame` is None."""
        request = {"operation": "numpy", "frames": None if frame is None else [frame], "rescale": rescale,
                   "compress": compress}
        return self._call(file, request)[1]

    def series_numpy(self, files: list[tuple[FileInfo, int]], rescale: bool, compress: bool) -> bytes:
        """A .npy (or .npz) of the frames of several files in turn: each file with its number of frames."""
        request = {"operation": "series-numpy", "files": [{**self._location(file), "frames": frames} for file, frames in files],
                   "rescale": rescale, "compress": compress}
        return self._answer(*self._processes.call(request))[1]

    def matlab(self, file: FileInfo, frame: int) -> bytes:
        return self._call(file, {"operation": "matlab", "frame": frame})[1]

    def raw_frame(self, file: FileInfo, frame: int) -> tuple[str, bytes]:
        """The frame as stored, and its media type."""
        answer, data = self._call(file, {"operation": "raw", "frame": frame})
        return answer["media_type"], data

    def transcode(self, data: bytes, syntax: str, quality: int = 90) -> bytes:
        """The DICOM file `data` in another transfer syntax (see transcode.py)."""
        return self._answer(*self._processes.call({"operation": "transcode", "syntax": syntax, "quality": quality}, data))[1]

    def picture(self, data: bytes) -> tuple[dict[str, Any], bytes]:
        """A PNG or JPEG as pixel data: its description (rows, columns, samples, bits) and pixels."""
        return self._answer(*self._processes.call({"operation": "picture"}, data))

    def close(self) -> None:
        self._processes.close()

    def _call(self, file: FileInfo, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        return self._answer(*self._processes.call({**request, **self._location(file)}))

    def _location(self, file: FileInfo) -> dict[str, Any]:
        return {"path": str(self._storage.path(file.uuid)), "compressed": file.compression != CompressionType.NONE}

    @staticmethod
    def _answer(answer: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        if "error" in answer:
            raise IsengardError(ErrorCode[answer["error"]], answer["details"])
        return answer, body
