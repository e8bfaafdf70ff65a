"""C-FIND latency at the study level: queries sent one after the other on one association (a
pynetdicom SCU, Study Root FIND), each timed from its request to its final status.

`measure_cfind(host, port, aet, queries)` is meant for the benchmark's runner, which gives both
servers the same queries (constraints such as {"PatientID": "P00042"} or {"StudyDate":
"20050101-20051231"}); every query also asks for the usual study return keys.
"""

import socket
import statistics
import time
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

WARM_UP_QUERIES = 5
# Between two queries, the SCU's association thread must get to see that its caller is done:
# else, in pynetdicom 3.0, it may take the next answer off the queue before the caller does, who
# then waits for it until the timeout.
PAUSE_S = 0.005
PENDING = (0xFF00, 0xFF01)
# What a viewer's study list asks for (empty values: return keys).
RETURN_KEYS = (
    "PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyDescription", "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
)


def _no_delay(event: evt.Event) -> None:
    """Without TCP_NODELAY, each small request waits for the peer's delayed ACK (~40 ms)."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class CFindLatency:
    p50_ms: float
    p95_ms: float
    queries: int
    mean_matches: float  # answers per query, to check that both servers found the same


def measure_cfind(
    host: str, port: int, aet: str, queries: list[dict[str, str]], calling_aet: str = "BENCHSCU"
) -> CFindLatency:
    """Run the study-level `queries` (after a few of them as warm-up) on one association."""
    if len(queries) < 2:
        raise ValueError("At least two queries are needed for percentiles")
    ae = AE(calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(host, port, ae_title=aet, evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)])
    if not assoc.is_established:
        raise ConnectionError(f"No association with {aet} on {host}:{port}")
    warm_up = queries[:WARM_UP_QUERIES]
    latencies_ms, matches = [], []
    try:
        for number, keys in enumerate(warm_up + queries):
            start = time.perf_counter()
            answers = _count_answers(assoc, keys)
            if number >= len(warm_up):
                latencies_ms.append((time.perf_counter() - start) * 1000)
                matches.append(answers)
            time.sleep(PAUSE_S)
    finally:
        assoc.release()
    percentiles = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return CFindLatency(percentiles[49], percentiles[94], len(queries), statistics.fmean(matches))


def _count_answers(assoc: Association, keys: dict[str, str]) -> int:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for keyword, value in {**dict.fromkeys(RETURN_KEYS, ""), **keys}.items():
        setattr(identifier, keyword, value)
    answers = 0
    for status, _ in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
        code = status.get("Status")
        if code in PENDING:
            answers += 1
        elif code != 0x0000:
            raise RuntimeError(f"C-FIND {keys} ended with status {code}")
    return answers
