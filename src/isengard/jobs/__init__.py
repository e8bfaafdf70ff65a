"""The jobs engine: long tasks (archives, DICOM transfers...) run in the background, as Orthanc's jobs.

`isengard.jobs` (a JobsEngine) runs the submitted jobs on ConcurrentJobs worker threads, the highest
priority first; /jobs shows them, and pauses, resumes, cancels or resubmits them. The last
JobsHistorySize finished jobs are kept; with SaveJobs, the jobs are saved into the index (global property
5, the layout of Orthanc's) and come back after a restart: waiting ones wait again, running ones run again
from their saved state, paused ones stay paused.

Submitting: `isengard.jobs.submit(job, priority) -> id` returns at once; `isengard.jobs.run_synchronously(job,
priority)` waits and returns the job's content, or raises its error. REST routes with Orthanc's
"Synchronous"/"Asynchronous"/"Priority" body fields answer through `rest.jobs.answer_job`.

Writing a job type (see archive.py and dicom.py):

    class ExampleJob(Job):
        type_name = "Example"  # the "Type" of /jobs/{id}; registers the class for restoring

        def start(self): ...         # before the first step of each run (again after a pause or a restart)
        def step(self) -> bool: ...  # one short piece of work; True when all is done; raise IsengardError
                                     # to fail (its code and details become the job's ErrorCode/ErrorDetails)
        @property
        def progress(self) -> float: ...  # 0 to 1
        def stop(self, reason): ...  # left the Running state (StopReason), or canceled while waiting:
                                     # close associations, delete files...
        def reset(self): ...         # rewind for /jobs/{id}/resubmit of a failed job (by default: refused)
        def content(self) -> dict: ...     # the "Content" of /jobs/{id}, and the answer of synchronous calls
        def outputs(self) -> dict: ...     # {key: JobOutput} of a successful job, for /jobs/{id}/{key}
        def serialize(self) -> dict | None: ...  # what from_json needs after a restart; None: not saved
        @classmethod
        def from_json(cls, data, isengard) -> "ExampleJob": ...

Pause and cancel take effect between steps, so keep steps short (one instance, one C-MOVE answer...); a
step blocked in I/O delays them, and the server's stop. Define job types in modules imported at
start-up (by isengard.server, directly or not): a saved job whose type is unknown is dropped.
"""

from .archive import ArchiveJob, MediaJob
from .modification import ResourceModificationJob
from .dicom import RetrieveJob, StoreJob
from .engine import JobsEngine, TrackedJob
from .job import Job, JobOutput, JobState, StopReason
from .persistence import IndexJobsStore

__all__ = [
    "ArchiveJob", "IndexJobsStore", "Job", "JobOutput", "JobState", "JobsEngine", "MediaJob", "RetrieveJob", "StopReason",
    "ResourceModificationJob", "StoreJob", "TrackedJob",
]
