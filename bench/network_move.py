"""C-MOVE throughput: a server moves a study to DCMTK's storescp.

storescp receives the instances without writing them (`--ignore`), so that the disk does not
weigh on the figure. The time runs from the C-MOVE request to its final response.
"""

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom import Dataset
from pynetdicom import AE, build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from .servers import free_port

DESTINATION_AET = "STORESCP"
START_TIMEOUT_S = 10


@dataclass
class MoveResult:
    instances: int  # the sub-operations the server reports completed
    seconds: float

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds


@contextmanager
def storescp() -> Iterator[int]:
    """A storescp (AET DESTINATION_AET) on a free port, which it yields; it writes nothing."""
    port = free_port()
    command = ["storescp", "--ignore", "-aet", DESTINATION_AET, str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TCP_NODELAY": "1"})
    try:
        _wait_for_listener(port)
        yield port
    finally:
        process.kill()
        process.wait()


def _wait_for_listener(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"storescp did not listen on port {port} within {START_TIMEOUT_S} s")


def move_study(port: int, aet: str, calling_aet: str, study_uid: str) -> MoveResult:
    """Ask the server (`aet` on `port`) to C-MOVE the study to DESTINATION_AET, which it must know."""
    ae = AE(calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
    model = StudyRootQueryRetrieveInformationModelMove
    assoc = ae.associate("127.0.0.1", port, [build_context(model)], ae_title=aet)
    if not assoc.is_established:
        raise ConnectionError(f"{aet} on port {port} refused the association")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        began = time.perf_counter()
        responses = list(assoc.send_c_move(query, DESTINATION_AET, model))
        seconds = time.perf_counter() - began
    finally:
        assoc.release()
    status = responses[-1][0] if responses else Dataset()
    if status.get("Status") != 0x0000:
        raise RuntimeError(f"the C-MOVE failed: {status or 'no response'}")
    return MoveResult(int(status.get("NumberOfCompletedSuboperations", 0)), seconds)
