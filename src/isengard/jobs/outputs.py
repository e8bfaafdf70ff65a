"""The files that finished jobs offer for download (ZIP archives), the least recently used dropped first."""

import logging
import threading
from collections import OrderedDict

from .job import JobOutput

log = logging.getLogger(__name__)


class OutputFiles:
    """At most `capacity` jobs keep their outputs (Orthanc's MediaArchiveSize); the files go with them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._by_job: OrderedDict[str, dict[str, JobOutput]] = OrderedDict()

    def keep(self, job_id: str, outputs: dict[str, JobOutput]) -> None:
        if not outputs:
            return
        with self._lock:
            self._by_job[job_id] = outputs
            evicted = []
            while len(self._by_job) > self.capacity:
                evicted.append(self._by_job.popitem(last=False)[1])
        for dropped in evicted:
            _delete(dropped)

    def get(self, job_id: str, key: str) -> JobOutput | None:
        with self._lock:
            outputs = self._by_job.get(job_id)
            if outputs is None or key not in outputs:
                return None
            self._by_job.move_to_end(job_id)
            return outputs[key]

    def forget(self, job_id: str) -> None:
        with self._lock:
            outputs = self._by_job.pop(job_id, {})
        _delete(outputs)

    def clear(self) -> None:
        with self._lock:
            everything, self._by_job = list(self._by_job.values()), OrderedDict()
        for outputs in everything:
            _delete(outputs)


def _delete(outputs: dict[str, JobOutput]) -> None:
    for output in outputs.values():
        try:
            output.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("Cannot delete the job output %s: %s", output.path, exc)
