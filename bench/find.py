"""`/tools/find` latency at the study level, for three typical C-FIND-like queries (their makers
serve the C-FIND benchmark too)."""

import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

from .client import Client
from .dataset import DatasetShape, patients, study_dates

WARM_UP_QUERIES = 5
SERIES_BUDGET_S = 30  # bounds the run even if a server is pathologically slow
UNSUPPORTED = (404, 405)  # /tools/find not implemented (yet)

Query = dict[str, str]
QueryMaker = Callable[[random.Random], Query]
NamePatterns = Callable[[str, str], tuple[str, ...]]  # (surname, given name) -> PatientName wildcards


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


def rest_name_patterns(surname: str, given: str) -> tuple[str, ...]:
    return f"{surname[:3]}*", f"*^{given}*", f"{surname[0]}*{given[-1]}*"


def query_makers(
    known: list[tuple[str, str]], dates: list[date], range_days: int, name_patterns: NamePatterns
) -> dict[str, QueryMaker]:
    """The kinds of query: `known` (PatientID, PatientName) pairs and study `dates` to draw from,
    the length of the StudyDate range, and the PatientName wildcards built from a surname and a given name."""
    first, last = min(dates), max(dates)

    def by_patient_id(rng: random.Random) -> Query:
        return {"PatientID": rng.choice(known)[0]}

    def by_patient_name(rng: random.Random) -> Query:
        surname, given = rng.choice(known)[1].split("^")[:2]
        return {"PatientName": rng.choice(name_patterns(surname, given))}

    def by_study_date(rng: random.Random) -> Query:
        start = first + timedelta(days=rng.randrange((last - first).days))
        return {"StudyDate": f"{start:%Y%m%d}-{start + timedelta(days=range_days):%Y%m%d}"}

    return {
        "PatientID exact": by_patient_id,
        "PatientName wildcard": by_patient_name,
        "StudyDate range": by_study_date,
    }


def draw(make: QueryMaker, count: int, seed: str) -> list[Query]:
    """`count` queries of one kind; the same `seed` gives the same queries on every server."""
    rng = random.Random(seed)
    return [make(rng) for _ in range(count)]


def measure_find(port: int, shape: DatasetShape, queries: int, seed: int = 1) -> list[FindSeries]:
    """Every kind of query, without then with Expand; the same random queries on every server."""
    makers = query_makers(patients(shape), study_dates(shape), 365, rest_name_patterns)
    client = Client(port)
    try:
        return [
            _measure_series(client, kind, expand, draw(make, WARM_UP_QUERIES + queries, f"{seed}-{kind}"))
            for kind, make in makers.items()
            for expand in (False, True)
        ]
    finally:
        client.close()


def _measure_series(client: Client, kind: str, expand: bool, queries: list[Query]) -> FindSeries:
    series = FindSeries(kind, expand)
    deadline = time.monotonic() + SERIES_BUDGET_S
    for i, query in enumerate(queries):
        body = {"Level": "Study", "Query": query, "Expand": expand}
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
