"""The DICOM network benchmark's own data, generated once and cached beside the main data set.

- A study list for C-FIND: 10,000 studies of 4,000 patients, one small CT slice each (8x8 pixels,
  about 1.5 KiB) with the study-level tags of `dataset.ct_instance`. Surnames are made of three
  syllables, so that a PatientName wildcard matches a handful of studies, as at a real site.
- A study to C-MOVE: 500 slices of 64x64 pixels (as in the main data set) in 5 series.

Study indices (hence UIDs) do not overlap with the main data set's.
"""

from datetime import date
from pathlib import Path

from . import dataset

STUDY_LIST_STUDIES = 10_000
STUDY_LIST_PATIENTS = 4_000
FIRST_LISTED_STUDY = 100_000
SMALL_SLICE = 8
SYLLABLES = ("BER", "CA", "DO", "FI", "GAL", "HO", "KA", "LEN", "MO", "NU", "RI", "SA", "TOR", "VAN", "WE", "ZI")
MOVED_STUDY = 90_000
MOVED_SERIES = 5
MOVED_INSTANCES = 500


def surname(patient: int) -> str:
    # An odd stride is a bijection modulo 16**3: every patient of the list has a surname of its own.
    code = (patient * 2111) % len(SYLLABLES) ** 3
    return "".join(SYLLABLES[code // len(SYLLABLES) ** k % len(SYLLABLES)] for k in (2, 1, 0))


def listed_patients() -> list[tuple[str, str]]:
    """(PatientID, PatientName) of every patient of the study list."""
    return [(f"LIST{p:05d}", f"{surname(p)}^{dataset.GIVEN_NAMES[p % len(dataset.GIVEN_NAMES)]}")
            for p in range(STUDY_LIST_PATIENTS)]


def listed_name_patterns(surname: str, given: str) -> tuple[str, ...]:
    """PatientName wildcards as typed at a desk: the surname, its first letters, the surname and an initial."""
    return f"{surname}*", f"{surname[:4]}*", f"{surname}^{given[0]}*"


def listed_study_dates() -> list[date]:
    return [dataset.study_date(FIRST_LISTED_STUDY + s) for s in range(STUDY_LIST_STUDIES)]


def study_list(cache: Path) -> list[Path]:
    """The files of the study list, one per study; generated on first use."""
    folder = cache / f"study-list-{STUDY_LIST_STUDIES}st-{STUDY_LIST_PATIENTS}p-v1"
    return dataset.cached(folder, _write_study_list, f"{STUDY_LIST_STUDIES} one-instance studies")


def _write_study_list(folder: Path) -> None:
    pixels = dataset.pixel_data(0, SMALL_SLICE)
    patients = listed_patients()
    for s in range(STUDY_LIST_STUDIES):
        patient = s % STUDY_LIST_PATIENTS
        ds = dataset.ct_instance(patient, FIRST_LISTED_STUDY + s, 0, 0, pixels, SMALL_SLICE)
        ds.PatientID, ds.PatientName = patients[patient]
        ds.save_as(folder / f"{s:05d}.dcm", enforce_file_format=True)


def moved_study(cache: Path) -> list[Path]:
    """The files of the study to C-MOVE; generated on first use."""
    folder = cache / f"moved-study-{MOVED_INSTANCES}i-v1"
    return dataset.cached(folder, _write_moved_study, f"a study of {MOVED_INSTANCES} instances")


def moved_study_uid() -> str:
    return dataset.uid("study", MOVED_STUDY)


def _write_moved_study(folder: Path) -> None:
    slices = [dataset.pixel_data(seed) for seed in range(MOVED_INSTANCES // MOVED_SERIES)]
    for number in range(MOVED_INSTANCES):
        series, instance = number % MOVED_SERIES, number // MOVED_SERIES
        ds = dataset.ct_instance(0, MOVED_STUDY, series, instance, slices[instance])
        ds.save_as(folder / f"{series:02d}-{instance:03d}.dcm", enforce_file_format=True)
