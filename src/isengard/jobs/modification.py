"""The modification or anonymization of a patient, a study or a series (Orthanc's job type
"ResourceModification"): each instance is read, changed, and stored as a new instance, the new
resources recording where they come from (ModifiedFrom, AnonymizedFrom).

The old UIDs map to the same new ones throughout the job, so that the resource keeps its shape:
a study modified is one new study with as many series as before.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

import pydicom

from ..dicom.anonymization import Anonymization, Replacements
from ..dicom.levels import Level
from ..dicom.modification import Modification
from ..dicom.tags import STUDY_INSTANCE_UID
from ..errors import IsengardError
from ..index import MetadataType
from ..ingest import Origin
from .job import Job

if TYPE_CHECKING:
    from ..server import Isengard

log = logging.getLogger(__name__)


class ResourceModificationJob(Job):
    type_name = "ResourceModification"

    def __init__(self, isengard: Isengard, resources: list[str], level: Level, change: Modification | Anonymization,
                 keep_source: bool = True, bulk: bool = False, description: str = "REST API"):
        """The instances of `resources` changed as those of a resource of `level` (whose own
        identifier changes); `keep_source` false: each original instance is deleted once its new
        version is stored. `bulk`: answer every new resource (/tools/bulk-modify), not just one."""
        self._isengard = isengard
        self._keep_source = keep_source
        self._resources = resources
        self._level = level
        self._change = change
        self._bulk = bulk
        self._description = description
        self._instances: list[str] = []
        self._position = 0
        self._failed = 0
        self._new_ids: dict[Level, str] = {}  # of the resource made from the first instance
        self._created: dict[Level, list[str]] = {level: [] for level in Level}  # every new resource, in order
        self._replacements = Replacements(isengard.anonymized_patient_name)  # old UIDs and patients -> new ones

    @property
    def anonymization(self) -> bool:
        return isinstance(self._change, Anonymization)

    def start(self) -> None:
        if not self._instances:
            with self._isengard.index.read() as index:
                for public_id in self._resources:
                    resource = index.get(public_id)
                    self._instances += [instance.public_id for instance in index.descendants(resource, Level.INSTANCE)]

    def step(self) -> bool:
        if self._position < len(self._instances):
            try:
                self._change_instance(self._instances[self._position])
            except IsengardError as exc:
                log.error("Instance %s not %s: %s", self._instances[self._position],
                          "anonymized" if self.anonymization else "modified", exc.details)
                self._failed += 1
            self._position += 1
        return self._position >= len(self._instances)

    @property
    def progress(self) -> float:
        return self._position / len(self._instances) if self._instances else 0.0

    def content(self) -> dict[str, Any]:
        counts = {"Description": self._description, "FailedInstancesCount": self._failed,
                  "InstancesCount": len(self._instances), "IsAnonymization": self.anonymization}
        if self._bulk:  # the new resources, instances first, as Orthanc lists them
            resources = [{"ID": public_id, "Path": f"/{level.route}/{public_id}", "Type": level.title}
                         for level in reversed(Level) for public_id in self._created[level]]
            return {**counts, "Resources": resources}
        new_id = self._new_ids.get(self._level, "")
        return {**counts, "ID": new_id, "Path": f"/{self._level.route}/{new_id}",
                "PatientID": self._new_ids.get(Level.PATIENT, ""), "Type": self._level.title}

    def serialize(self) -> dict[str, Any] | None:
        """All that the job needs to go on after a restart, the replacements made so far included
        (the rest of the resource then gets the same new UIDs)."""
        return {
            "Resources": self._resources, "Level": self._level.title, "IsAnonymization": self.anonymization,
            "Change": self._change.to_json(), "KeepSource": self._keep_source, "Bulk": self._bulk,
            "Description": self._description, "Instances": self._instances, "Position": self._position,
            "Failed": self._failed, "NewIds": {level.title: public_id for level, public_id in self._new_ids.items()},
            "Created": {level.title: ids for level, ids in self._created.items()},
            "Uids": self._replacements.uids, "Patients": self._replacements.patients,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], isengard: Isengard) -> ResourceModificationJob:
        change = (Anonymization if data["IsAnonymization"] else Modification).from_json(data["Change"])
        job = cls(isengard, data["Resources"], Level.parse(data["Level"]), change, data["KeepSource"], data["Bulk"],
                  data["Description"])
        job._restore(data)
        return job

    def _restore(self, data: dict[str, Any]) -> None:
        self._instances, self._position, self._failed = data["Instances"], data["Position"], data["Failed"]
        self._new_ids = {Level.parse(title): public_id for title, public_id in data["NewIds"].items()}
        self._created = {Level.parse(title): ids for title, ids in data["Created"].items()}
        self._replacements.uids.update(data["Uids"])
        self._replacements.patients.update({old: tuple(new) for old, new in data["Patients"].items()})

    def _change_instance(self, instance_id: str) -> None:
        dataset = pydicom.dcmread(io.BytesIO(self._isengard.read_dicom(instance_id)), force=True)
        if isinstance(self._change, Anonymization):
            self._change.apply(dataset, self._replacements)
        else:
            self._change.apply(dataset, self._level, lambda _tag, old: self._replacements.uid(old))
        dataset.ensure_file_meta()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        output = io.BytesIO()
        dataset.save_as(output, enforce_file_format=True)
        data = output.getvalue()
        if self._change.transcode:
            data = self._isengard.images.transcode(data, self._change.transcode)
        stored = self._isengard.ingest.store(data, Origin(source="RestApi"))
        self._record_origin(instance_id, stored.public_ids)
        if not self._keep_source:
            with self._isengard.index.read() as index:
                original = index.get(instance_id, Level.INSTANCE)
            self._isengard.delete(original)

    def _record_origin(self, instance_id: str, new_ids: dict[Level, str]) -> None:
        """ModifiedFrom (AnonymizedFrom) on the new resources of the modified level and below."""
        self._new_ids = self._new_ids or dict(new_ids)
        for level, public_id in new_ids.items():
            if public_id not in self._created[level]:
                self._created[level].append(public_id)
        origin = MetadataType.ANONYMIZED_FROM if self.anonymization else MetadataType.MODIFIED_FROM
        with self._isengard.index.write() as index:
            old = index.get(instance_id, Level.INSTANCE)
            for level in Level:
                if level >= self._level:
                    new = index.get(new_ids[level], level)
                    index.set_metadata(new.internal_id, {origin: index.ancestor(old, level).public_id})


class StudyRestructuringJob(ResourceModificationJob):
    """/studies/{id}/split and /merge: instances moved into one study (a new one for a split), each
    with new series and instance UIDs and the study's tags; the originals go unless KeepSource."""

    def __init__(self, isengard: Isengard, resources: list[str], change: Modification, target_study: str,
                 keep_source: bool):
        super().__init__(isengard, resources, Level.SERIES, change, keep_source)
        self._target_study = target_study  # the public ID of the study receiving the instances, "" until made

    def serialize(self) -> dict[str, Any] | None:
        return {**super().serialize(), "TargetStudy": self._target_study}  # type: ignore[dict-item]

    @classmethod
    def from_json(cls, data: dict[str, Any], isengard: Isengard) -> ResourceModificationJob:
        job = cls(isengard, data["Resources"], Modification.from_json(data["Change"]), data["TargetStudy"],
                  data["KeepSource"])
        job._restore(data)
        return job

    def content(self) -> dict[str, Any]:
        target = self._target_study or self._new_ids.get(Level.STUDY, "")
        answer = {"Description": self._description, "FailedInstancesCount": self._failed,
                  "InstancesCount": len(self._instances), "TargetStudy": target}
        return answer


class SplitStudyJob(StudyRestructuringJob):
    type_name = "SplitStudy"

    def content(self) -> dict[str, Any]:
        return {**super().content(), "TargetStudyUID": str(self._change.replace.get(STUDY_INSTANCE_UID, ""))}


class MergeStudyJob(StudyRestructuringJob):
    type_name = "MergeStudy"
