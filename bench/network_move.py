"""C-MOVE throughput: a server moves a 500-instance study to DCMTK's storescp.

Not part of `python -m bench`; run `python -m bench.network_move [--skip-orthanc] [--rows 64]`.
Each server (Isengard, then Orthanc 1.10.1) starts on fresh storage, gets the study through
`POST /instances`, then a pynetdicom SCU asks it to C-MOVE the study to a storescp that receives
the instances without writing them (`--ignore`, so that the disk does not weigh on the figure).
The time runs from the C-MOVE request to its final response.
"""

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pynetdicom import AE, build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from . import dataset, servers
from .ingest import ingest
from .servers import Server

STUDY = 90_000  # the index of the study in the synthetic data set's UIDs
SERIES = 5
MOVER_AET, DESTINATION_AET, SERVER_AET = "MOVER", "STORESCP", "ORTHANC"


@dataclass
class MoveResult:
    product: str
    instances: int
    seconds: float
    completed: int

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds


def study_files(count: int, rows: int) -> list[bytes]:
    """One study of `count` CT instances of rows x rows pixels, in SERIES series."""
    pixels = dataset.pixel_data(0)
    if rows != dataset.ROWS:
        pixels = (pixels * ((rows * rows) // (dataset.ROWS * dataset.COLUMNS) + 1))[: rows * rows * 2]
    files = []
    for number in range(count):
        ds = dataset.ct_instance(0, STUDY, number % SERIES, number // SERIES, pixels)
        ds.Rows = ds.Columns = rows
        with tempfile.SpooledTemporaryFile() as buffer:
            ds.save_as(buffer, enforce_file_format=True)
            buffer.seek(0)
            files.append(buffer.read())
    return files


def start_storescp(folder: Path) -> tuple[subprocess.Popen, int]:
    port = servers.free_port()
    command = ["storescp", "--ignore", "-aet", DESTINATION_AET, "--output-directory", str(folder), str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TCP_NODELAY": "1"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("storescp did not start")


def configured(server: Server, destination_port: int) -> Server:
    """The server, knowing the requester and the destination of the C-MOVE."""
    server.config["DicomModalities"] = {
        "mover": [MOVER_AET, "127.0.0.1", 1],
        "storescp": [DESTINATION_AET, "127.0.0.1", destination_port],
    }
    (server.folder / "config.json").write_text(json.dumps(server.config, indent=2))
    return server


def move_study(dicom_port: int, study_uid: str) -> tuple[float, int]:
    """Seconds from the C-MOVE request to its final response, and the sub-operations completed."""
    ae = AE(MOVER_AET)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
    model = StudyRootQueryRetrieveInformationModelMove
    assoc = ae.associate("127.0.0.1", dicom_port, [build_context(model)], ae_title=SERVER_AET)
    if not assoc.is_established:
        raise RuntimeError("the server refused the association")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    began = time.perf_counter()
    responses = list(assoc.send_c_move(query, DESTINATION_AET, model))
    seconds = time.perf_counter() - began
    assoc.release()
    status = responses[-1][0]
    if status.get("Status") != 0x0000:
        raise RuntimeError(f"the C-MOVE failed: {status}")
    return seconds, int(status.NumberOfCompletedSuboperations)


def measure(factory, product: str, files: list[bytes], folder: Path) -> MoveResult:
    storescp, port = start_storescp(folder)
    server = configured(factory(folder / product), port).start()
    try:
        ingest(server.port, [(0, data) for data in files], threads=4)
        seconds, completed = move_study(server.config["DicomPort"], dataset.uid("study", STUDY))
    except RuntimeError:
        print(server.log_tail(400), flush=True)
        raise
    finally:
        server.stop()
        storescp.kill()
        storescp.wait()
    return MoveResult(product, len(files), seconds, completed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.network_move", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rows", type=int, default=dataset.ROWS, help="image size (64: 9.5 KiB instances)")
    parser.add_argument("--skip-orthanc", action="store_true")
    arguments = parser.parse_args(argv)
    files = study_files(arguments.instances, arguments.rows)
    products = [("Isengard", servers.isengard)]
    if not arguments.skip_orthanc and servers.orthanc_binary():
        products.append(("Orthanc", servers.orthanc))
    with tempfile.TemporaryDirectory() as temporary:
        for product, factory in products:
            folder = Path(temporary) / product
            (folder / product).mkdir(parents=True)
            result = measure(factory, product, files, folder)
            print(f"{product}: {result.instances} instances ({len(files[0]) // 1024} KiB each) moved in "
                  f"{result.seconds:.2f} s: {result.per_second:.0f} instances/s", flush=True)


if __name__ == "__main__":
    main()
