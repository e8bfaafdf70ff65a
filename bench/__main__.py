"""`python -m bench`: Isengard against Orthanc 1.10.1 on the same synthetic CT data set.

Each server runs alone (never both at once), on fresh storage: a first instance for
the single-client ingest, a second one for the multi-client ingest, then the find
queries on the data that second ingest stored.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from . import dataset, servers
from .client import Client
from .find import measure_find
from .ingest import ingest
from .profile import sampling, summary
from .report import Results
from .servers import Server

RESULTS = Path(__file__).parent / "results"
ServerFactory = Callable[[Path], Server]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4, help="client threads of the concurrent ingest (4)")
    parser.add_argument("--queries", type=int, default=200, help="find queries per kind and Expand value (200)")
    parser.add_argument("--skip-orthanc", action="store_true", help="measure Isengard only")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, sample an extra single-client ingest of Isengard with py-spy")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="JSON results file")
    return parser.parse_args(argv)


@contextmanager
def running(factory: ServerFactory, folder: Path) -> Iterator[Server]:
    folder.mkdir(parents=True)
    server = factory(folder).start()
    try:
        yield server
    finally:
        server.stop()


def get_json(server: Server, path: str) -> Any:
    client = Client(server.port)
    try:
        status, body = client.request("GET", path)
    finally:
        client.close()
    if status != 200:
        raise RuntimeError(f"{server.product}: GET {path} answered HTTP {status}")
    return json.loads(body)


def check_hierarchy(server: Server, shape: dataset.DatasetShape) -> None:
    """The finds are only comparable if both servers hold the whole data set, grouped alike."""
    counts = {level: len(get_json(server, f"/{level}")) for level in ("patients", "studies", "series")}
    expected = {"patients": shape.patients, "studies": shape.studies, "series": shape.series}
    if counts != expected:
        raise RuntimeError(f"{server.product} holds {counts} after the ingest, expected {expected}")


def measure(product: str, factory: ServerFactory, instances: list[tuple[int, bytes]], shape: dataset.DatasetShape,
            args: argparse.Namespace, folder: Path, results: Results) -> str:
    """Every figure of one server; returns its version."""
    with running(factory, folder / "single-client") as server:
        version = get_json(server, "/system")["Version"]
        results.record("RSS after start", "MiB", "lower", product, server.rss_mib())
        measure_ingest(server, instances, 1, results)
        results.record("peak RSS, 1-thread ingest", "MiB", "lower", product, server.peak_rss_mib())
    with running(factory, folder / "multi-client") as server:
        measure_ingest(server, instances, args.threads, results)
        check_hierarchy(server, shape)
        measure_finds(server, shape, args.queries, results)
        results.record(f"peak RSS, {args.threads}-thread ingest + find", "MiB", "lower", product, server.peak_rss_mib())
    return version


def measure_ingest(server: Server, instances: list[tuple[int, bytes]], threads: int, results: Results) -> None:
    done = ingest(server.port, instances, threads)
    progress(server.product, f"{threads}-thread ingest: {done.per_second:.1f} instances/s ({done.seconds:.1f} s)")
    label = "1 thread" if threads == 1 else f"{threads} threads"
    results.record(f"REST ingest, {label}", "instances/s", "higher", server.product, done.per_second)


def measure_finds(server: Server, shape: dataset.DatasetShape, queries: int, results: Results) -> None:
    for series in measure_find(server.port, shape, queries):
        progress(server.product, f"{series.name}: {series.error or f'{len(series.latencies_ms)} queries'}")
        for p in (50, 95):
            results.record(f"{series.name} p{p}", "ms", "lower", server.product, series.percentile(p), series.error or "")
        results.record_matches(series.name, server.product, series.mean_matches)


def profile_isengard_ingest(instances: list[tuple[int, bytes]], folder: Path) -> Path:
    """A separate run, so that the sampling overhead does not touch the measured figures."""
    raw = RESULTS / "isengard-ingest.pyspy.txt"
    with running(servers.isengard, folder / "profile") as server:
        with sampling(server.pid, raw):
            ingest(server.port, instances, threads=1)
    text = summary(raw, focus="IngestPipeline.store")
    (RESULTS / "isengard-ingest-profile.txt").write_text(text + "\n")
    return RESULTS / "isengard-ingest-profile.txt"


def warn_if_busy() -> float:
    """The 1-minute load average: other work on the machine skews every figure."""
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) / 2:
        print(f"Warning: load average {load:.1f} on {os.cpu_count()} CPUs; the figures will be noisy.")
    return load


def progress(product: str, message: str) -> None:
    print(f"[{product}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    shape = dataset.DatasetShape()
    instances = dataset.load(shape, RESULTS / "dataset")
    products: dict[str, ServerFactory] = {"Isengard": servers.isengard}
    if args.skip_orthanc:
        print("Orthanc skipped (--skip-orthanc): Isengard's figures only.")
    elif servers.orthanc_binary() is None:
        print("Orthanc is not installed (/usr/sbin/Orthanc): Isengard's figures only.")
    else:
        products["Orthanc"] = servers.orthanc

    load = warn_if_busy()
    results = Results()
    versions = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="isengard-bench-") as scratch:
        for product, factory in products.items():
            versions[product] = measure(product, factory, instances, shape, args, Path(scratch) / product, results)
        profile = profile_isengard_ingest(instances, Path(scratch)) if args.profile else None
    results.flag_mismatched_finds()

    print()
    print(f"{len(instances)} CT instances ({sum(len(d) for _, d in instances) / len(instances) / 1024:.1f} KiB each), "
          f"{shape.studies} studies, {shape.series} series, {shape.patients} patients; "
          f"servers run one after the other on fresh storage.")
    print(results.table(list(products)))
    results.write_json(args.output, {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.monotonic() - began, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "load_average_at_start": load},
        "dataset": {"instances": len(instances), "studies": shape.studies, "series": shape.series,
                    "patients": shape.patients, "name": shape.name},
        "versions": {"isengard_package": metadata.version("isengard"), **versions},  # /system "Version"
        "options": {"threads": args.threads, "queries": args.queries},
        "profile": str(profile) if profile else None,
    })
    print(f"\nWritten to {args.output}")
    if profile:
        print(f"Profile of Isengard's ingest: {profile}\n{profile.read_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
