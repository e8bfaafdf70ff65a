"""What a job is to the engine: a task done step by step, that can report, stop, be saved and come back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ErrorCode, IsengardError

if TYPE_CHECKING:
    from ..server import Isengard


class JobState(str, Enum):
    """The states of Orthanc's jobs; the value is the name the REST API shows."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESS = "Success"
    FAILURE = "Failure"
    PAUSED = "Paused"
    RETRY = "Retry"  # Orthanc's jobs waiting to be retried: no job type of 1.10.1 asks for it, nor do Isengard's


class StopReason(Enum):
    """Why `Job.stop` is called."""

    SUCCESS = "Success"
    FAILURE = "Failure"
    PAUSED = "Paused"  # paused by the REST API, or the server stops: the job will run again later
    CANCELED = "Canceled"


@dataclass(frozen=True)
class JobOutput:
    """A file that a successful job offers at /jobs/{id}/{key}; the engine deletes it when it forgets it."""

    path: Path
    media_type: str
    filename: str


# Job types by name, filled by Job.__init_subclass__: the engine restores saved jobs through it.
JOB_TYPES: dict[str, type[Job]] = {}


class Job(ABC):
    """Base of every job type; see the package docstring for how to write one."""

    type_name: ClassVar[str]  # "Archive", "DicomModalityStore"...: the "Type" of the REST API

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" in cls.__dict__:
            JOB_TYPES[cls.type_name] = cls

    def start(self) -> None:
        """Called before the first step of each run: at first, and again after a pause or a restart."""

    @abstractmethod
    def step(self) -> bool:
        """Do the next step; True when the job is complete. Raise IsengardError to fail."""

    @property
    @abstractmethod
    def progress(self) -> float:
        """From 0 to 1."""

    def stop(self, reason: StopReason) -> None:
        """Called when the job leaves the Running state, or is canceled while waiting: release what it holds."""

    def reset(self) -> None:
        """Rewind a failed job for its resubmission; refuse with an IsengardError if it cannot run again."""
        raise IsengardError(ErrorCode.BAD_SEQUENCE_OF_CALLS, f"Cannot resubmit a job of type {self.type_name}")

    def content(self) -> dict[str, Any]:
        """The "Content" of /jobs/{id}: what the job does and has done."""
        return {}

    def outputs(self) -> dict[str, JobOutput]:
        """The files a successful job offers for download, by key."""
        return {}

    def serialize(self) -> dict[str, Any] | None:
        """What `from_json` needs to rebuild the job after a restart (SaveJobs), or None not to save it."""
        return None

    @classmethod
    def from_json(cls, data: dict[str, Any], isengard: Isengard) -> Job:
        """Rebuild a saved job from what `serialize` gave."""
        raise NotImplementedError(f"{cls.__name__} cannot be restored")


def restore_job(data: dict[str, Any], isengard: Isengard) -> Job:
    """A saved job, whose "Type" names its class; ValueError for types this server does not know."""
    job_type = JOB_TYPES.get(data.get("Type", ""))
    if job_type is None:
        raise ValueError(f"Unknown job type: {data.get('Type')}")
    return job_type.from_json(data, isengard)
