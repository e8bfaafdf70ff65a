"""C-FIND latency at the study level: queries sent one after the other on one association
(Study Root FIND), each timed from its request to its final status.

`measure_cfind(host, port, aet, queries)` is meant for the benchmark's runner, which gives both
servers the same queries (constraints such as {"PatientID": "P00042"} or {"StudyDate":
"20050101-20051231"}); every query also asks for the usual study return keys.

The SCU is a minimal blocking one of its own, for the reason the REST client is (client.py): the
figure must be the server's. pynetdicom's SCU hands every PDU between two polling threads; on a
2-core machine that added 5 to 20 ms to each query (more with more matches), often as much as
the servers' own work as DCMTK's findscu showed it, and much noise. This one negotiates a single
presentation context (Study Root FIND, Implicit VR Little Endian), sends each query in one
P-DATA-TF, and reads the responses until the final one, counting the pending ones without
decoding their identifiers.
"""

import socket
import statistics
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

WARM_UP_QUERIES = 5
BUDGET_S = 30  # bounds the run even if a server is pathologically slow
TIMEOUT_S = 60
PENDING = (0xFF00, 0xFF01)
# What a viewer's study list asks for (empty values: return keys).
RETURN_KEYS = (
    "PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyDescription", "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedInstances",
)
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
CONTEXT_ID = 1
MAX_PDU_LENGTH = 65536  # what this SCU receives
C_FIND_RQ = 0x0020
# PDU types (PS3.8 9.3)
ASSOCIATE_RQ, ASSOCIATE_AC, P_DATA_TF, RELEASE_RQ, ABORT = 1, 2, 4, 5, 7
# Message control header bits of a PDV (PS3.8 E.2)
COMMAND, LAST_FRAGMENT = 0x01, 0x02


@dataclass(frozen=True)
class CFindLatency:
    p50_ms: float
    p95_ms: float
    queries: int
    mean_matches: float  # answers per query, to check that both servers found the same


def measure_cfind(
    host: str, port: int, aet: str, queries: list[dict[str, str]], calling_aet: str = "BENCHSCU"
) -> CFindLatency:
    """Run the study-level `queries` (after a few of them as warm-up) on one association, or as
    many of them as BUDGET_S allows."""
    if len(queries) < 2:
        raise ValueError("At least two queries are needed for percentiles")
    warm_up = queries[:WARM_UP_QUERIES]
    latencies_ms, matches = [], []
    deadline = time.monotonic() + BUDGET_S
    with _Association(host, port, aet, calling_aet) as association:
        for number, keys in enumerate(warm_up + queries):
            start = time.perf_counter()
            answers = association.find(number + 1, _identifier(keys))
            if number >= len(warm_up):
                latencies_ms.append((time.perf_counter() - start) * 1000)
                matches.append(answers)
            if time.monotonic() > deadline and len(latencies_ms) >= 2:
                break
    percentiles = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return CFindLatency(percentiles[49], percentiles[94], len(latencies_ms), statistics.fmean(matches))


def _identifier(keys: dict[str, str]) -> bytes:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for keyword, value in {**dict.fromkeys(RETURN_KEYS, ""), **keys}.items():
        setattr(identifier, keyword, value)
    return _encode(identifier)


def _command(message_id: int) -> bytes:
    command = Dataset()
    command.AffectedSOPClassUID = STUDY_ROOT_FIND
    command.CommandField = C_FIND_RQ
    command.MessageID = message_id
    command.Priority = 0  # medium
    command.CommandDataSetType = 0x0000  # an identifier follows
    elements = _encode(command)
    return struct.pack("<HHII", 0, 0, 4, len(elements)) + elements  # CommandGroupLength first


def _encode(dataset: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, dataset)
    return buffer.getvalue()


class _Association:
    """One association with a single accepted presentation context: Study Root FIND."""

    def __init__(self, host: str, port: int, aet: str, calling_aet: str):
        self.aet = aet
        self.socket = socket.create_connection((host, port), timeout=TIMEOUT_S)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else each request waits ~40 ms
        self.reader: BinaryIO = self.socket.makefile("rb")
        self.command = bytearray()  # the fragments of a response command so far
        self.statuses: deque[int] = deque()  # of the response commands read, not yet returned
        try:
            self.socket.sendall(_associate_request(aet, calling_aet))
            _check_acceptance(*_read_pdu(self.reader), aet)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "_Association":
        return self

    def __exit__(self, error_type: type | None, *_: object) -> None:
        try:
            if error_type is None:
                self.socket.sendall(_pdu(RELEASE_RQ, bytes(4)))
                _read_pdu(self.reader)  # the A-RELEASE-RP
        finally:
            self.close()

    def close(self) -> None:
        self.reader.close()
        self.socket.close()

    def find(self, message_id: int, identifier: bytes) -> int:
        """Send one C-FIND-RQ; the number of pending responses before the final, successful one."""
        self.socket.sendall(_p_data(COMMAND | LAST_FRAGMENT, _command(message_id)) + _p_data(LAST_FRAGMENT, identifier))
        answers = 0
        while (status := self._next_response_status()) in PENDING:
            answers += 1
        if status != 0x0000:
            raise RuntimeError(f"C-FIND ended with status 0x{status:04X}")
        return answers

    def _next_response_status(self) -> int:
        """The Status of the next response command (the identifiers in between are skipped)."""
        while not self.statuses:
            pdu_type, body = _read_pdu(self.reader)
            if pdu_type == ABORT:
                raise ConnectionError(f"{self.aet} aborted the association")
            if pdu_type != P_DATA_TF:
                raise ConnectionError(f"{self.aet} sent a PDU of type {pdu_type} during a C-FIND")
            offset = 0
            while offset < len(body):
                length, _, control = struct.unpack_from(">IBB", body, offset)
                if control & COMMAND:
                    self.command += body[offset + 6:offset + 4 + length]
                    if control & LAST_FRAGMENT:
                        self.statuses.append(_status(bytes(self.command)))
                        self.command.clear()
                offset += 4 + length
        return self.statuses.popleft()


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BxI", pdu_type, len(body)) + body


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def _p_data(control: int, fragment: bytes) -> bytes:
    """A P-DATA-TF of one PDV; commands and identifiers here are far below any peer's maximum PDU length."""
    return _pdu(P_DATA_TF, struct.pack(">IBB", len(fragment) + 2, CONTEXT_ID, control) + fragment)


def _associate_request(aet: str, calling_aet: str) -> bytes:
    header = struct.pack(">HH16s16s32x", 1, 0, aet.ljust(16).encode(), calling_aet.ljust(16).encode())
    syntaxes = _item(0x30, STUDY_ROOT_FIND.encode()) + _item(0x40, IMPLICIT_VR_LITTLE_ENDIAN.encode())
    presentation_context = _item(0x20, bytes([CONTEXT_ID, 0, 0, 0]) + syntaxes)
    user_information = _item(0x50, _item(0x51, struct.pack(">I", MAX_PDU_LENGTH)))
    return _pdu(ASSOCIATE_RQ, header + _item(0x10, APPLICATION_CONTEXT.encode()) + presentation_context
                + user_information)


def _check_acceptance(pdu_type: int, body: bytes, aet: str) -> None:
    """The A-ASSOCIATE-AC must accept the presentation context (item 0x21, result 0)."""
    if pdu_type != ASSOCIATE_AC:
        raise ConnectionError(f"{aet} did not accept the association (PDU type {pdu_type})")
    offset = 68  # past the fixed fields
    while offset < len(body):
        item_type, length = struct.unpack_from(">BxH", body, offset)
        if item_type == 0x21:
            if body[offset + 6] != 0:
                raise ConnectionError(f"{aet} refused Study Root FIND (result {body[offset + 6]})")
            return
        offset += 4 + length
    raise ConnectionError(f"{aet} answered no presentation context")


def _read_pdu(reader: BinaryIO) -> tuple[int, bytes]:
    header = reader.read(6)
    if len(header) < 6:
        raise ConnectionError("the server closed the connection")
    pdu_type, length = struct.unpack(">BxI", header)
    body = reader.read(length)
    if len(body) < length:
        raise ConnectionError("the server closed the connection")
    return pdu_type, body


def _status(command: bytes) -> int:
    """The Status (0000,0900) of an Implicit VR Little Endian command set."""
    offset = 0
    while offset < len(command):
        group, element, length = struct.unpack_from("<HHI", command, offset)
        if (group, element) == (0x0000, 0x0900):
            return struct.unpack_from("<H", command, offset + 8)[0]
        offset += 8 + length
    raise ConnectionError("a response command without Status")
