"""The DICOM network figures of one product, each server alone on fresh storage:

- C-STORE ingest of the main data set by storescu, over one association, then over several
  concurrent ones (a fresh server each);
- on a third server, loaded through REST with the 10,000-study list: study-level C-FIND latency;
  then, with the 500-instance study added, C-MOVEs of that study to a storescp.

A measure that fails (the DICOM services are young) gives "n/a" and a note instead of stopping the run.
"""

import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

from . import network_data
from .find import Query, draw, query_makers
from .ingest import ingest
from .network_find import measure_cfind
from .network_move import DESTINATION_AET, move_study, storescp
from .network_store import store
from .report import Results, progress
from .servers import Server, ServerFactory, running

DCMTK_TOOLS = ("storescu", "storescp")
SCU_AET = "BENCHSCU"  # the AET of the benchmark's C-FIND and C-MOVE requests, declared to the servers
LOAD_THREADS = 4
CFIND_DATE_RANGE_DAYS = 7  # about 20 of the 10,000 studies
MOVES = 3


@dataclass(frozen=True)
class NetworkData:
    stored: list[tuple[int, Path]]  # the main data set, as (study index, file)
    study_list: list[Path]
    moved_study: list[Path]


def missing_tools() -> list[str]:
    return [tool for tool in DCMTK_TOOLS if shutil.which(tool) is None]


def cfind_queries(count: int, seed: int = 1) -> dict[str, list[Query]]:
    """The REST find's kinds of query, sized for the study list; the same on every server."""
    makers = query_makers(network_data.listed_patients(), network_data.listed_study_dates(),
                          CFIND_DATE_RANGE_DAYS, network_data.listed_name_patterns)
    return {kind: draw(make, count, f"{seed}-{kind}") for kind, make in makers.items()}


def measure_network(factory: ServerFactory, data: NetworkData, threads: int, queries: int, folder: Path,
                    results: Results) -> None:
    for associations in sorted({1, threads}):
        with running(factory, folder / f"c-store-{associations}") as server:
            measure_cstore(server, data.stored, associations, results)
            results.record(f"peak RSS, C-STORE {_associations(associations)}", "MiB", "lower", server.product,
                           server.peak_rss_mib())
    with storescp() as destination_port:
        with running(factory, folder / "c-find-c-move", _modalities(destination_port)) as server:
            measure_cfinds(server, data.study_list, cfind_queries(queries), results)
            measure_cmove(server, data.moved_study, results)
            results.record("peak RSS, REST load + C-FIND + C-MOVE", "MiB", "lower", server.product,
                           server.peak_rss_mib())


def _modalities(destination_port: int) -> dict:
    """The benchmark's SCU, so that it may C-FIND and C-MOVE (DicomAlwaysAllowFind and -Move are false),
    and the storescp, destination of the C-MOVEs."""
    return {"DicomModalities": {"bench": [SCU_AET, "127.0.0.1", 1],
                                "storescp": [DESTINATION_AET, "127.0.0.1", destination_port]}}


def measure_cstore(server: Server, files: list[tuple[int, Path]], associations: int, results: Results) -> None:
    name = f"C-STORE ingest, {_associations(associations)}"
    try:
        done = store(server.dicom_port, server.aet, files, associations)
        held = server.get_json("/statistics")["CountInstances"]
    except (RuntimeError, OSError) as error:
        results.record(name, "instances/s", "higher", server.product, None, failure_note(server, name, error))
        return
    progress(server.product, f"{name}: {done.per_second:.1f} instances/s ({done.seconds:.1f} s)")
    note = "" if held == len(files) else f"holds {held} of {len(files)} instances"
    results.record(name, "instances/s", "higher", server.product, done.per_second, note)


def measure_cfinds(server: Server, study_list: list[Path], queries: dict[str, list[Query]], results: Results) -> None:
    try:
        _load(server, study_list)
        load_failure = ""
    except (RuntimeError, OSError) as error:
        load_failure = failure_note(server, "loading the study list", error)
    for kind, drawn in queries.items():
        name = f"C-FIND {kind}"
        latencies, note = ((None, None), load_failure) if load_failure else _measure_cfind(server, name, drawn, results)
        for p, value in zip((50, 95), latencies):
            results.record(f"{name} p{p}", "ms", "lower", server.product, value, note)


def _measure_cfind(server: Server, name: str, queries: list[Query],
                   results: Results) -> tuple[tuple[float | None, float | None], str]:
    """(p50, p95) of one kind of query and a note; records the mean number of matches."""
    try:
        latency = measure_cfind("127.0.0.1", server.dicom_port, server.aet, queries, SCU_AET)
    except (RuntimeError, OSError) as error:  # ConnectionError included
        return (None, None), failure_note(server, name, error)
    progress(server.product, f"{name}: {latency.queries} queries, {latency.mean_matches:.1f} studies each")
    results.record_matches(name, server.product, latency.mean_matches)
    return (latency.p50_ms, latency.p95_ms), ""


def measure_cmove(server: Server, study: list[Path], results: Results) -> None:
    """The median of MOVES moves: one lasts well under a second, too short to trust alone."""
    name = f"C-MOVE {len(study)}-instance study"
    try:
        _load(server, study)
        moves = [move_study(server.dicom_port, server.aet, SCU_AET, network_data.moved_study_uid())
                 for _ in range(MOVES)]
    except (RuntimeError, OSError) as error:
        results.record(name, "instances/s", "higher", server.product, None, failure_note(server, name, error))
        return
    per_second = statistics.median(move.per_second for move in moves)
    progress(server.product, f"{name}: {per_second:.1f} instances/s (median of {MOVES})")
    short = [move.instances for move in moves if move.instances != len(study)]
    note = f"{short[0]} of {len(study)} moved" if short else ""
    results.record(name, "instances/s", "higher", server.product, per_second, note)


def _load(server: Server, files: list[Path]) -> None:
    """As fast as the server takes them: REST uploads from several threads (an IngestError stops it)."""
    done = ingest(server.port, [(number, path.read_bytes()) for number, path in enumerate(files)], LOAD_THREADS)
    progress(server.product, f"loaded {len(files)} instances by REST in {done.seconds:.1f} s")


def failure_note(server: Server, what: str, error: Exception) -> str:
    """Print the error with the end of the server's log; return the table's note."""
    progress(server.product, f"{what} failed: {error}\n{server.log_tail(20)}")
    return f"failed: {str(error).splitlines()[0][:100]}" if str(error) else f"failed: {type(error).__name__}"


def _associations(count: int) -> str:
    return "1 association" if count == 1 else f"{count} associations"
