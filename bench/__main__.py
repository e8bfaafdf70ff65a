"""`python -m bench`: Isengard against Orthanc 1.10.1 on the same synthetic CT data set.

Each server runs alone (never both at once), on fresh storage: a first instance for
the single-client ingest, a second one for the multi-client ingest, then the find
queries on the data that second ingest stored; a third one for the previews of two sample
images (images.py); then the DICOM network's servers (network.py).

The whole measure runs several rounds, the products taking turns, and each figure is the
best of its rounds: on a shared virtual machine the speed of the CPU varies (a fixed Python
loop took from 0.38 to 0.71 s within a minute on the reference machine), so one round can
make either product look twice slower than it is.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from . import dataset, network_data, servers
from .find import measure_find
from .images import SAMPLES, measure_images
from .ingest import ingest
from .network import NetworkData, measure_network, missing_tools
from .profile import sampling, summary
from .report import Results, progress
from .servers import Server, ServerFactory, running

RESULTS = Path(__file__).parent / "results"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4,
                        help="client threads of the concurrent REST ingest and previews, "
                             "associations of the concurrent C-STORE (4)")
    parser.add_argument("--queries", type=int, default=200,
                        help="find queries per kind and Expand value, C-FIND queries per kind (200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the whole measure, figures are the best (3)")
    parser.add_argument("--skip-orthanc", action="store_true", help="measure Isengard only")
    parser.add_argument("--skip-images", action="store_true", help="leave out the previews of the sample images")
    parser.add_argument("--skip-network", action="store_true",
                        help="leave out the DICOM network (C-STORE, C-FIND, C-MOVE)")
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, sample an extra single-client ingest of Isengard with py-spy")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="JSON results file")
    return parser.parse_args(argv)


def check_hierarchy(server: Server, shape: dataset.DatasetShape) -> None:
    """The finds are only comparable if both servers hold the whole data set, grouped alike."""
    counts = {level: len(server.get_json(f"/{level}")) for level in ("patients", "studies", "series")}
    expected = {"patients": shape.patients, "studies": shape.studies, "series": shape.series}
    if counts != expected:
        raise RuntimeError(f"{server.product} holds {counts} after the ingest, expected {expected}")


def measure(product: str, factory: ServerFactory, instances: list[tuple[int, bytes]], shape: dataset.DatasetShape,
            network: NetworkData | None, args: argparse.Namespace, folder: Path, results: Results) -> str:
    """Every figure of one server; returns its version."""
    with running(factory, folder / "single-client") as server:
        version = server.get_json("/system")["Version"]
        results.record("RSS after start", "MiB", "lower", product, server.rss_mib())
        measure_ingest(server, instances, 1, results)
        results.record("peak RSS, 1-thread ingest", "MiB", "lower", product, server.peak_rss_mib())
    with running(factory, folder / "multi-client") as server:
        measure_ingest(server, instances, args.threads, results)
        check_hierarchy(server, shape)
        measure_finds(server, shape, args.queries, results)
        results.record(f"peak RSS, {args.threads}-thread ingest + find", "MiB", "lower", product, server.peak_rss_mib())
    if not args.skip_images:
        measure_images(factory, folder, results, args.threads)
    if network:
        measure_network(factory, network, args.threads, args.queries, folder / "network", results)
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


def network_data_unless_skipped(args: argparse.Namespace) -> NetworkData | None:
    if args.skip_network:
        print("DICOM network skipped (--skip-network).")
        return None
    if missing := missing_tools():
        print(f"DICOM network skipped: DCMTK's {', '.join(missing)} not installed.")
        return None
    cache = RESULTS / "dataset"
    return NetworkData(dataset.files(dataset.DatasetShape(), cache), network_data.study_list(cache),
                       network_data.moved_study(cache))


def warn_if_busy() -> float:
    """The 1-minute load average: other work on the machine skews every figure."""
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) / 2:
        print(f"Warning: load average {load:.1f} on {os.cpu_count()} CPUs; the figures will be noisy.")
    return load


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

    if args.skip_images:
        print("Previews skipped (--skip-images).")
    network = network_data_unless_skipped(args)
    load = warn_if_busy()
    results = Results()
    versions = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="isengard-bench-") as scratch:
        for round_number in range(1, args.rounds + 1):
            for product, factory in products.items():
                progress(product, f"round {round_number} of {args.rounds}")
                versions[product] = measure(product, factory, instances, shape, network, args,
                                            Path(scratch) / f"{product}-{round_number}", results)
        profile = profile_isengard_ingest(instances, Path(scratch)) if args.profile else None
    results.flag_mismatched_finds()

    print()
    print(f"{len(instances)} CT instances ({sum(len(d) for _, d in instances) / len(instances) / 1024:.1f} KiB each), "
          f"{shape.studies} studies, {shape.series} series, {shape.patients} patients; "
          f"servers run one after the other on fresh storage; best of {args.rounds} rounds.")
    if not args.skip_images:
        print(f"Previews of {', '.join(f'{file.name} ({name})' for name, file in SAMPLES.items())}.")
    if network:
        print(f"C-FIND over {len(network.study_list):,} one-instance studies; C-MOVE of a "
              f"{len(network.moved_study)}-instance study to storescp.")
    print(results.table(list(products)))
    results.write_json(args.output, {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.monotonic() - began, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "load_average_at_start": load},
        "dataset": {"instances": len(instances), "studies": shape.studies, "series": shape.series,
                    "patients": shape.patients, "name": shape.name},
        "versions": {"isengard_package": metadata.version("isengard"), **versions},  # /system "Version"
        "network_data": network and {"study_list": len(network.study_list), "moved_study": len(network.moved_study)},
        "images": None if args.skip_images else {name: str(file) for name, file in SAMPLES.items()},
        "options": {"threads": args.threads, "queries": args.queries, "skip_images": args.skip_images,
                    "skip_network": args.skip_network, "rounds": args.rounds},
        "profile": str(profile) if profile else None,
    })
    print(f"\nWritten to {args.output}")
    if profile:
        print(f"Profile of Isengard's ingest: {profile}\n{profile.read_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
