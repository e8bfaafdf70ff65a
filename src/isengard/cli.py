"""`isengard [CONFIG]`: start the server; `isengard --config=FILE`: write a default configuration."""

import argparse
import logging
import signal
import sys

# The server process goes without numpy, Pillow and the codecs, which pydicom loads whenever it can
# (together 40% of the server's memory at start: 89 instead of 64 MiB): images are decoded in image
# processes (see images/__init__.py).
PIXEL_MODULES = ("numpy", "PIL", "gdcm", "pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls")
for _module in PIXEL_MODULES:
    sys.modules.setdefault(_module, None)  # type: ignore[assignment]

import uvicorn  # noqa: E402

from . import __version__  # noqa: E402
from .config import ConfigurationError, load_configuration, write_default_configuration  # noqa: E402
from .rest import create_app  # noqa: E402
from .server import Isengard, Lifecycle  # noqa: E402

log = logging.getLogger("isengard")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="isengard", description="A lightweight, scriptable DICOM server.")
    parser.add_argument("configuration", nargs="?", help="configuration file or folder (Orthanc format)")
    parser.add_argument("--config", metavar="FILE", help="write a commented default configuration to FILE and exit")
    parser.add_argument("--verbose", action="store_true", help="log more")
    parser.add_argument("--trace", action="store_true", help="log everything")
    parser.add_argument("--version", action="version", version=f"isengard {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    level = logging.DEBUG if args.trace else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname).1s %(asctime)s %(name)s] %(message)s")
    if args.config:
        write_default_configuration(args.config)
        print(f"Default configuration written to {args.config}")
        return 0
    lifecycle = Lifecycle()
    while True:  # once, or again after each /tools/reset, re-reading the configuration
        lifecycle.restart_requested = False
        try:
            isengard = Isengard(load_configuration(args.configuration), lifecycle)
        except ConfigurationError as exc:
            print(f"isengard: {exc}", file=sys.stderr)
            return 2
        try:
            serve(isengard, log_level=level)
        except ConfigurationError as exc:  # found when the servers start: DICOM TLS files, ports
            print(f"isengard: {exc}", file=sys.stderr)
            return 2
        finally:
            isengard.close()
        if not lifecycle.restart_requested:
            return 0


def serve(isengard: Isengard, log_level: int = logging.WARNING) -> None:
    config = isengard.config
    uvicorn_config = uvicorn.Config(
        create_app(isengard),
        host="0.0.0.0",
        port=config.http_port,
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=5 if config.keep_alive else 0,
        log_level=logging.getLevelName(log_level).lower(),
        access_log=log_level <= logging.DEBUG,
    )
    server = uvicorn.Server(uvicorn_config)
    # uvicorn stops on SIGTERM and SIGINT (Ctrl+C), then raises the signal again once it has
    # restored the previous handler: with Python's default ones, the process would die before
    # closing jobs, index and DICOM server (or with a KeyboardInterrupt traceback). This one lets
    # `main` close them and exit with status 0.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _exit_after_closing)
    isengard.lifecycle.attach(lambda: setattr(server, "should_exit", True))
    log.warning("Isengard %s serving HTTP on port %d", __version__, config.http_port)
    try:
        isengard.dicom_server.start()  # stopped by isengard.close()
    except OSError as exc:
        raise ConfigurationError(f"Cannot listen on DicomPort {config.dicom_port}: {exc.strerror or exc}") from None
    isengard.jobs.start_restored()
    server.run()


def _exit_after_closing(_signal: int, _frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
