"""The jobs engine: the registry of jobs, the worker threads that run them by priority, their history
and their saving (Orthanc's JobsEngine and JobsRegistry, with the same states and transitions)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..errors import ErrorCode, IsengardError
from .job import Job, JobOutput, JobState, StopReason, restore_job
from .outputs import OutputFiles
from .persistence import IndexJobsStore

if TYPE_CHECKING:
    from ..server import Isengard

log = logging.getLogger(__name__)

TIMESTAMP = "%Y%m%dT%H%M%S.%f"  # 20261123T101010.123456, in UTC
SAVE_DELAY = 0.1  # changes are saved this soon (those that come together go in one save)...
SAVE_PERIOD = 10.0  # ...and, while jobs run, their progress this often
STOP_TIMEOUT = 5.0  # how long close() waits for the steps under way to end


def timestamp(moment: datetime) -> str:
    return moment.strftime(TIMESTAMP)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, TIMESTAMP).replace(tzinfo=timezone.utc)


_CODES = {code.status: code for code in ErrorCode}


@dataclass(frozen=True)
class JobError:
    """ErrorCode, ErrorDescription and ErrorDetails of a job (Orthanc's codes, 0 when all is well)."""

    status: int
    description: str
    details: str = ""
    http_status: int = 500

    @classmethod
    def of(cls, exc: BaseException) -> JobError:
        if isinstance(exc, IsengardError):
            return cls(exc.code.status, exc.code.message, exc.details, exc.http_status)
        internal = ErrorCode.INTERNAL_ERROR
        return cls(internal.status, internal.message, f"{type(exc).__name__}: {exc}")

    @classmethod
    def restored(cls, status: int, details: str) -> JobError:
        if status == NO_ERROR.status:
            return cls(status, NO_ERROR.description, details)
        return cls(status, _CODES[status].message if status in _CODES else "Unknown error", details)

    def exception(self) -> IsengardError:
        """The error to answer to whoever waited for the job."""
        code = _CODES.get(self.status)
        if code is None:  # a code that errors.ErrorCode lacks (from a job saved by another server)
            return IsengardError(ErrorCode.INTERNAL_ERROR, self.description)
        return IsengardError(code, self.details, self.http_status)


NO_ERROR = JobError(0, "Success")
CANCELED = JobError(ErrorCode.CANCELED_JOB.status, ErrorCode.CANCELED_JOB.message)


@dataclass(eq=False)
class JobRecord:
    """A job in the registry, with what the engine knows of it."""

    id: str
    job: Job
    priority: int
    state: JobState
    created: datetime
    last_change: datetime
    runtime: float = 0.0  # seconds spent in steps
    error: JobError = NO_ERROR
    completed: datetime | None = None
    pause_requested: bool = False  # pause and cancel of a running job happen after its current step
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        return self.state in (JobState.SUCCESS, JobState.FAILURE)

    def describe(self, now: datetime) -> dict[str, Any]:
        """The JSON of /jobs/{id}."""
        info: dict[str, Any] = {}
        if self.completed is not None:
            info["CompletionTime"] = timestamp(self.completed)
        progress = 1.0 if self.state is JobState.SUCCESS else self.job.progress
        info.update({
            "Content": self.job.content(),
            "CreationTime": timestamp(self.created),
            "EffectiveRuntime": round(self.runtime, 3),
            "ErrorCode": self.error.status,
            "ErrorDescription": self.error.description,
            "ErrorDetails": self.error.details,
            "ID": self.id,
            "Priority": self.priority,
            "Progress": int(100 * progress),
            "State": self.state.value,
            "Timestamp": timestamp(now),
            "Type": self.job.type_name,
        })
        return info

    def saved(self) -> dict[str, Any] | None:
        """The entry of the saved registry, or None for jobs that are not saved."""
        data = self.job.serialize()
        if data is None:
            return None
        return {
            "CreationTime": timestamp(self.created),
            "ErrorCode": self.error.status,
            "ErrorDetails": self.error.details,
            "Job": {**data, "Type": self.job.type_name},
            "LastChangeTime": timestamp(self.last_change),
            "Priority": self.priority,
            "Runtime": round(self.runtime * 1000),
            "State": self.state.value,
        }

    @classmethod
    def restored(cls, job_id: str, entry: dict[str, Any], isengard: Isengard) -> JobRecord:
        state = JobState(entry["State"])
        if state in (JobState.RUNNING, JobState.RETRY):  # interrupted by the stop: run again
            state = JobState.PENDING
        last_change = _parse_timestamp(entry["LastChangeTime"])
        return cls(
            id=job_id,
            job=restore_job(entry["Job"], isengard),
            priority=int(entry["Priority"]),
            state=state,
            created=_parse_timestamp(entry["CreationTime"]),
            last_change=last_change,
            runtime=entry.get("Runtime", 0) / 1000,
            error=JobError.restored(int(entry.get("ErrorCode", 0)), entry.get("ErrorDetails", "")),
            completed=last_change if state in (JobState.SUCCESS, JobState.FAILURE) else None,
        )


class TrackedJob:
    """A submitted job that someone waits for; it keeps the job's record even once the history drops it."""

    def __init__(self, engine: JobsEngine, record: JobRecord):
        self._engine = engine
        self._record = record

    @property
    def id(self) -> str:
        return self._record.id

    def wait(self) -> dict[str, Any]:
        """The job's content once it has succeeded; raises its error if it fails."""
        return self._engine._wait(self._record)


class JobsEngine:
    """Runs the submitted jobs on `threads` workers, the highest priority first, and keeps the last
    `history_size` finished jobs; with a store, the jobs are saved and come back after a restart."""

    def __init__(
        self,
        isengard: Isengard,
        threads: int,
        history_size: int,
        output_capacity: int,
        store: IndexJobsStore | None,
    ):
        self._outputs = OutputFiles(output_capacity)
        self._history_size = history_size
        self._store = store
        self._lock = threading.Condition()
        self._records: dict[str, JobRecord] = {}
        self._queue: list[tuple[int, int, JobRecord]] = []  # heap of (-priority, order of submission, record)
        self._order = itertools.count()
        self._history: deque[JobRecord] = deque()  # finished jobs, the oldest first
        self._closing = False
        self._dirty = threading.Event()
        self._restored: list[JobRecord] = []  # pending jobs restored, queued by start_restored
        if store is not None:
            self._restore(store.load(), isengard)
        self._threads = [
            threading.Thread(target=self._work, name=f"isengard-job-{i + 1}", daemon=True) for i in range(threads)
        ]
        if store is not None:
            self._threads.append(threading.Thread(target=self._save_loop, name="isengard-jobs-saver", daemon=True))
        for thread in self._threads:
            thread.start()

    # -- submission -------------------------------------------------------------------------------------

    def submit(self, job: Job, priority: int = 0) -> str:
        """Queue a job; returns its ID at once."""
        return self.submit_tracked(job, priority).id

    def submit_tracked(self, job: Job, priority: int = 0) -> TrackedJob:
        """Queue a job that the caller will wait for (TrackedJob.wait)."""
        now = _now()
        record = JobRecord(str(uuid.uuid4()), job, priority, JobState.PENDING, now, now)
        with self._lock:
            self._records[record.id] = record
            self._enqueue(record)
            self._changed()
        return TrackedJob(self, record)

    def run_synchronously(self, job: Job, priority: int = 0) -> dict[str, Any]:
        """Submit a job and wait for its end: its content on success, else its error is raised."""
        return self.submit_tracked(job, priority).wait()

    # -- the REST API's view ----------------------------------------------------------------------------

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._records)

    def describe(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(job_id)
            return record.describe(_now()) if record else None

    def describe_all(self) -> list[dict[str, Any]]:
        now = _now()
        with self._lock:
            return [self._records[job_id].describe(now) for job_id in sorted(self._records)]

    def output(self, job_id: str, key: str) -> JobOutput | None:
        return self._outputs.get(job_id, key)

    def start_restored(self) -> None:
        """Queue the pending jobs saved before the last stop. The server calls this once its DICOM
        server listens: a restored retrieval may have a node send the instances to it."""
        with self._lock:
            for record in self._restored:
                self._enqueue(record)  # those paused or canceled since are skipped by the workers
            self._restored.clear()
            self._lock.notify_all()

    # -- transitions; False when the job is unknown or the transition is not allowed ----------------------

    def pause(self, job_id: str) -> bool:
        """A waiting job is paused at once, a running one after its current step; finished jobs stay so."""
        with self._lock:
            record = self._records.get(job_id)
            if record is None:
                return False
            if record.state is JobState.PENDING:
                self._set_state(record, JobState.PAUSED)
            elif record.state is JobState.RUNNING:
                record.pause_requested = True
            return True

    def resume(self, job_id: str) -> bool:
        with self._lock:
            record = self._records.get(job_id)
            if record is None or record.state is not JobState.PAUSED:
                return False
            self._set_state(record, JobState.PENDING)
            self._enqueue(record)
            return True

    def cancel(self, job_id: str) -> bool:
        """A waiting job fails at once, a running one after its current step; finished jobs stay so."""
        with self._lock:
            record = self._records.get(job_id)
            if record is None:
                return False
            waiting = record.state in (JobState.PENDING, JobState.PAUSED)
            if waiting:
                self._complete(record, JobState.FAILURE, CANCELED)
            elif record.state is JobState.RUNNING:
                record.cancel_requested = True
        if waiting:
            record.job.stop(StopReason.CANCELED)
        return True

    def resubmit(self, job_id: str) -> bool:
        """Run a failed job again; raises the job's IsengardError when it cannot be reset."""
        with self._lock:
            record = self._records.get(job_id)
            if record is None or record.state is not JobState.FAILURE:
                return False
            record.job.reset()
            self._history.remove(record)
            record.completed = None
            record.runtime = 0.0
            self._set_state(record, JobState.PENDING)
            self._enqueue(record)
            return True

    # -- workers ----------------------------------------------------------------------------------------

    def _work(self) -> None:
        while (record := self._take()) is not None:
            self._run(record)

    def _take(self) -> JobRecord | None:
        with self._lock:
            while not self._closing:
                while self._queue:
                    record = heapq.heappop(self._queue)[2]
                    if record.state is JobState.PENDING:  # else paused or canceled since it was queued
                        # As Orthanc, a resubmitted job shows ErrorCode 0 once it runs, and its former details.
                        record.error = JobError(NO_ERROR.status, NO_ERROR.description, record.error.details)
                        self._set_state(record, JobState.RUNNING)
                        return record
                self._lock.wait()
            return None

    def _run(self, record: JobRecord) -> None:
        job = record.job
        try:
            job.start()
            while (interruption := self._interruption(record)) is None:
                began = time.monotonic()
                try:
                    done = job.step()
                finally:
                    with self._lock:
                        record.runtime += time.monotonic() - began
                if done:
                    self._end(record, StopReason.SUCCESS, NO_ERROR)
                    return
        except Exception as exc:  # noqa: BLE001 - whatever a step raises, the job fails with it
            self._fail(record, exc)
            return
        if interruption is StopReason.CANCELED:
            self._end(record, StopReason.CANCELED, CANCELED)
        else:
            self._interrupt(record)

    def _interruption(self, record: JobRecord) -> StopReason | None:
        """What stops a running job between two steps."""
        with self._lock:
            if record.cancel_requested:
                return StopReason.CANCELED
            if record.pause_requested or self._closing:
                return StopReason.PAUSED
            return None

    def _fail(self, record: JobRecord, exc: Exception) -> None:
        if record.cancel_requested:  # the step was cut short by the cancellation itself
            self._end(record, StopReason.CANCELED, CANCELED)
            return
        error = JobError.of(exc)
        if isinstance(exc, IsengardError):
            log.warning("Job %s (%s) failed: %s", record.id, record.job.type_name, exc)
        else:
            log.exception("Job %s (%s) failed", record.id, record.job.type_name)
        self._end(record, StopReason.FAILURE, error)

    def _end(self, record: JobRecord, reason: StopReason, error: JobError) -> None:
        self._stop_job(record, reason)
        with self._lock:
            self._complete(record, JobState.SUCCESS if reason is StopReason.SUCCESS else JobState.FAILURE, error)

    def _interrupt(self, record: JobRecord) -> None:
        """Paused by the REST API, or back to the queue when the server stops (it runs again after a restart)."""
        self._stop_job(record, StopReason.PAUSED)
        with self._lock:
            state = JobState.PAUSED if record.pause_requested else JobState.PENDING
            record.pause_requested = False
            self._set_state(record, state)
            if state is JobState.PENDING:
                self._enqueue(record)

    def _stop_job(self, record: JobRecord, reason: StopReason) -> None:
        try:
            record.job.stop(reason)
        except Exception:  # noqa: BLE001 - a job that cannot clean up does not change how it ended
            log.exception("Job %s (%s) could not stop cleanly", record.id, record.job.type_name)

    def _wait(self, record: JobRecord) -> dict[str, Any]:
        with self._lock:
            self._lock.wait_for(lambda: record.finished or self._closing)
            if record.state is JobState.SUCCESS:
                return record.job.content()
            if not record.finished:
                raise IsengardError(ErrorCode.INTERNAL_ERROR, "The server stopped before the end of the job")
            error = record.error
        raise error.exception()

    # -- registry (called with the lock held) -------------------------------------------------------------

    def _enqueue(self, record: JobRecord) -> None:
        heapq.heappush(self._queue, (-record.priority, next(self._order), record))

    def _set_state(self, record: JobRecord, state: JobState) -> None:
        record.state = state
        record.last_change = _now()
        self._changed()

    def _complete(self, record: JobRecord, state: JobState, error: JobError) -> None:
        record.error = error
        record.pause_requested = record.cancel_requested = False
        self._set_state(record, state)
        record.completed = record.last_change  # which is what is saved
        if state is JobState.SUCCESS:
            self._outputs.keep(record.id, record.job.outputs())
        self._history.append(record)
        self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Keep JobsHistorySize finished jobs (0: forget them as soon as they end)."""
        while len(self._history) > self._history_size:
            forgotten = self._history.popleft()
            del self._records[forgotten.id]
            self._outputs.forget(forgotten.id)

    def _changed(self) -> None:
        self._lock.notify_all()
        self._dirty.set()

    # -- saving (SaveJobs) ------------------------------------------------------------------------------

    def _restore(self, saved: dict[str, dict[str, Any]], isengard: Isengard) -> None:
        for job_id, entry in saved.items():
            try:
                record = JobRecord.restored(job_id, entry, isengard)
            except Exception as exc:  # noqa: BLE001 - a job that cannot come back must not stop the server
                log.warning("Cannot restore the saved job %s: %s", job_id, exc)
                continue
            self._records[job_id] = record
            if record.state is JobState.PENDING:
                self._restored.append(record)
        finished = sorted((r for r in self._records.values() if r.finished), key=lambda r: r.last_change)
        self._history.extend(finished)
        self._forget_oldest()
        if self._records:
            log.warning("Restored %d saved jobs", len(self._records))

    def _save_loop(self) -> None:
        while not self._closing:
            changed = self._dirty.wait(SAVE_PERIOD)
            if self._closing:
                return
            if changed or self._anything_running():
                time.sleep(SAVE_DELAY)
                self._dirty.clear()
                self._save()

    def _anything_running(self) -> bool:
        with self._lock:
            return any(record.state is JobState.RUNNING for record in self._records.values())

    def _save(self) -> None:
        assert self._store is not None
        with self._lock:
            jobs = {record.id: entry for record in self._records.values() if (entry := record.saved()) is not None}
        try:
            self._store.save(jobs)
        except Exception:  # noqa: BLE001 - the jobs go on; the next change tries again
            log.exception("Cannot save the jobs into the index")

    # -- shutdown ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers after their current step (their jobs wait for the next start), save, clean up."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._dirty.set()
        deadline = time.monotonic() + STOP_TIMEOUT
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        if busy:
            log.warning("Stopping while jobs still run (%s): they will run again after a restart", ", ".join(busy))
        if self._store is not None:
            self._save()
        self._outputs.clear()
