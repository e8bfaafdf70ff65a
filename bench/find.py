"""`/tools/find` latency at the study level, for three typical C-FIND-like queries."""

import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from .client import Client
from .dataset import DatasetShape, patients, study_dates

WARM_UP_QUERIES = 5
SERIES_BUDGET_S = 30  # bounds the run even if a server is pathologically slow
UNSUPPORTED = (404, 405)  # /tools/find not implemented (yet)

Query = dict[str, str]


@dataclass
class FindSeries:
    """The latencies of one kind of query, with or without Expand."""

    kind: str
    expand: bool
    latencies_ms: list[float] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def name(self) -> str:
        return f"find {self.kind}{' +Expand' if self.expand else ''}"

    def percentile(self, p: int) -> float | None:
        if self.error or len(self.latencies_ms) < 2:
            return None
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]

    @property
    def mean_matches(self) -> float | None:
        return statistics.fmean(self.matches) if self.matches and not self.error else None


def query_makers(shape: DatasetShape) -> dict[str, Callable[[random.Random], Query]]:
    known = patients(shape)
    dates = study_dates(shape)
    first, last = min(dates), max(dates)

    def by_patient_id(rng: random.Random) -> Query:
        return {"PatientID": rng.choice(known)[0]}

    def by_patient_name(rng: random.Random) -> Query:
        surname, given = rng.choice(known)[1].split("^")[:2]
        return {"PatientName": rng.choice((f"{surname[:3]}*", f"*^{given}*", f"{surname[0]}*{given[-1]}*"))}

    def by_study_date(rng: random.Random) -> Query:
        start = first + timedelta(days=rng.randrange((last - first).days))
        return {"StudyDate": f"{start:%Y%m%d}-{start + timedelta(days=365):%Y%m%d}"}

    return {
        "PatientID exact": by_patient_id,
        "PatientName wildcard": by_patient_name,
        "StudyDate range": by_study_date,
    }


def measure_find(port: int, shape: DatasetShape, queries: int, seed: int = 1) -> list[FindSeries]:
    """Every kind of query, without then with Expand; the same random queries on every server."""
    client = Client(port)
    try:
        return [
            _measure_series(client, kind, make, expand, queries, random.Random(f"{seed}-{kind}"))
            for kind, make in query_makers(shape).items()
            for expand in (False, True)
        ]
    finally:
        client.close()


def _measure_series(
    client: Client, kind: str, make: Callable[[random.Random], Query], expand: bool, count: int, rng: random.Random
) -> FindSeries:
    series = FindSeries(kind, expand)
    deadline = time.monotonic() + SERIES_BUDGET_S
    for i in range(WARM_UP_QUERIES + count):
        body = {"Level": "Study", "Query": make(rng), "Expand": expand}
        began = time.perf_counter()
        status, answer = client.post_json("/tools/find", body)
        elapsed_ms = (time.perf_counter() - began) * 1000
        if status != 200:
            series.error = "not implemented" if status in UNSUPPORTED else f"HTTP {status}: {answer[:200]!r}"
            return series
        if i >= WARM_UP_QUERIES:
            series.latencies_ms.append(elapsed_ms)
            series.matches.append(len(json.loads(answer)))
        if time.monotonic() > deadline:
            break
    return series
