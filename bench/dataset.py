"""A synthetic CT data set: small, realistic instances, generated once and cached.

The layout is fixed by `DatasetShape`, and every value is derived from indices, so
the same files (and the same DICOM UIDs) come back on every machine. Queries of the
find benchmark are drawn from `patients()` and `study_dates()`, which is why they live here.
"""

import random
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

SURNAMES = ("SMITH", "JONES", "MARTIN", "DUBOIS", "MULLER", "ROSSI", "GARCIA", "NOVAK", "JANSEN", "SILVA")
GIVEN_NAMES = ("ANNA", "JOHN", "MARIE", "PAUL", "LUCIA", "PETER", "SOFIA", "KARL")
BODY_PARTS = ("CHEST", "ABDOMEN", "HEAD", "PELVIS")
SERIES_KINDS = ("Topogram", "Axial 5mm", "Axial 1mm", "Coronal MPR")
FIRST_STUDY_DATE = date(2015, 1, 1)
STUDY_DATE_SPAN_DAYS = 10 * 365
ROWS = 64  # and as many columns
UID_NAMESPACE = uuid.UUID("5f1c9a52-7d3e-4c4b-9a8e-2b0d6e1f3a77")  # of this benchmark


@dataclass(frozen=True)
class DatasetShape:
    patients: int = 25
    studies_per_patient: int = 4
    series_per_study: int = 4
    instances_per_series: int = 5

    @property
    def studies(self) -> int:
        return self.patients * self.studies_per_patient

    @property
    def series(self) -> int:
        return self.studies * self.series_per_study

    @property
    def instances(self) -> int:
        return self.series * self.instances_per_series

    @property
    def name(self) -> str:
        return f"ct-{self.patients}p-{self.studies_per_patient}st-{self.series_per_study}se-{self.instances_per_series}i-v2"


def uid(*parts: object) -> str:
    """A UID under the 2.25 (UUID) root that depends only on `parts`, so every run uploads
    the same instances (pydicom's generate_uid ignores its entropy without a prefix)."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, '/'.join(map(str, parts))).int}"


def patient_name(patient: int) -> str:
    return f"{SURNAMES[patient % len(SURNAMES)]}^{GIVEN_NAMES[patient % len(GIVEN_NAMES)]}^{patient:02d}"


def patient_id(patient: int) -> str:
    return f"BENCH{patient:04d}"


def patients(shape: DatasetShape) -> list[tuple[str, str]]:
    """(PatientID, PatientName) of every patient."""
    return [(patient_id(p), patient_name(p)) for p in range(shape.patients)]


def study_date(study: int) -> date:
    # A multiplicative stride spreads the studies over ten years without clustering.
    return FIRST_STUDY_DATE + timedelta(days=(study * 7919) % STUDY_DATE_SPAN_DAYS)


def study_dates(shape: DatasetShape) -> list[date]:
    return [study_date(s) for s in range(shape.studies)]


def pixel_data(seed: int, size: int = ROWS) -> bytes:
    """A 12-bit CT-like slice of size x size pixels: a disc of soft tissue in air, with a little noise."""
    rng = random.Random(seed)
    centre, radius2 = size / 2, (size * 0.4) ** 2
    values = array(
        "h",
        (
            (1064 if (r - centre) ** 2 + (c - centre) ** 2 < radius2 else 24) + rng.randrange(16)
            for r in range(size)
            for c in range(size)
        ),
    )
    return values.tobytes()  # little endian on every platform Orthanc and Isengard run on


def ct_instance(patient: int, study: int, series: int, instance: int, pixels: bytes, size: int = ROWS) -> Dataset:
    """One slice; `pixels` holds size x size values."""
    day = study_date(study)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid("instance", study, series, instance)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = day.strftime("%Y%m%d")
    ds.StudyTime = f"{8 + study % 10:02d}{study % 60:02d}00"
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = f"{8 + study % 10:02d}{study % 60:02d}{series * 10:02d}"
    ds.AccessionNumber = f"ACC{study:06d}"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME Medical"
    ds.InstitutionName = "Isengard General Hospital"
    ds.ReferringPhysicianName = "WHO^REFERRED"
    ds.StationName = f"CT{study % 3 + 1}"
    ds.StudyDescription = f"CT {BODY_PARTS[study % len(BODY_PARTS)].title()}"
    ds.SeriesDescription = SERIES_KINDS[series % len(SERIES_KINDS)]
    ds.ManufacturerModelName = "Scanatron 64"
    ds.PatientName = patient_name(patient)
    ds.PatientID = patient_id(patient)
    ds.PatientBirthDate = f"{1940 + patient % 60}0{1 + patient % 9}15"
    ds.PatientSex = "MF"[patient % 2]
    ds.BodyPartExamined = BODY_PARTS[study % len(BODY_PARTS)]
    ds.SliceThickness = "5.0"
    ds.KVP = "120"
    ds.ProtocolName = ds.StudyDescription
    ds.ConvolutionKernel = "B30f"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = uid("study", study)
    ds.SeriesInstanceUID = uid("series", study, series)
    ds.StudyID = str(study)
    ds.SeriesNumber = series + 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance + 1
    z = -100.0 + 5.0 * instance
    ds.ImagePositionPatient = ["-160.0", "-160.0", f"{z:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = uid("frame", study)
    ds.SliceLocation = f"{z:.1f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = ["5.0", "5.0"]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.PixelData = pixels
    ds.file_meta = file_meta(ds)
    return ds


def file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def generate(shape: DatasetShape, folder: Path) -> None:
    slices = [pixel_data(seed) for seed in range(shape.instances_per_series)]  # the same anatomy in every series
    study = 0
    for patient in range(shape.patients):
        for _ in range(shape.studies_per_patient):
            for series in range(shape.series_per_study):
                for instance in range(shape.instances_per_series):
                    ds = ct_instance(patient, study, series, instance, slices[instance])
                    ds.save_as(folder / f"{study:04d}-{series:02d}-{instance:03d}.dcm", enforce_file_format=True)
            study += 1


def cached(folder: Path, generate: Callable[[Path], None], description: str) -> list[Path]:
    """The DICOM files of `folder`, sorted by name; `generate` writes them there on first use."""
    if not (folder / "COMPLETE").exists():
        print(f"Generating {description} in {folder} ...", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        generate(folder)
        (folder / "COMPLETE").touch()  # an interrupted generation is redone
    return sorted(folder.glob("*.dcm"))


def files(shape: DatasetShape, cache: Path) -> list[tuple[int, Path]]:
    """Every instance as (study index, file path), in study order; generated on first use."""
    paths = cached(cache / shape.name, partial(generate, shape), f"{shape.instances} instances")
    return [(int(path.name[:4]), path) for path in paths]


def load(shape: DatasetShape, cache: Path) -> list[tuple[int, bytes]]:
    """Every instance as (study index, file bytes), in study order; generated on first use."""
    return [(study, path.read_bytes()) for study, path in files(shape, cache)]
