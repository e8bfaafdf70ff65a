"""Optional sampling profile of the Isengard server with py-spy (`pip install py-spy`).

py-spy samples every thread, which matters here: the ingest work runs in Starlette's
thread pool, where cProfile (main thread only) would see nothing.
"""

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SAMPLING_RATE_HZ = 250


def py_spy() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


@contextmanager
def sampling(pid: int, output: Path) -> Iterator[None]:
    """Record collapsed stacks ("raw" format) of `pid` while the block runs."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    command = [binary, "record", "--pid", str(pid), "--rate", str(SAMPLING_RATE_HZ), "--format", "raw",
               "--output", str(output)]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        _, errors = recorder.communicate(timeout=60)
        if recorder.returncode not in (0, -signal.SIGINT) and not output.exists():
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")


def summary(raw: Path, focus: str, top: int = 30) -> str:
    """Where the samples within `focus` (a function name, e.g. IngestPipeline.store) went: the
    functions they were in (inclusive, whatever the line) and the lines they were on top of (self),
    in percent of those samples. Focusing leaves out idle threads, which py-spy cannot always tell."""
    inclusive: Counter[str] = Counter()
    itself: Counter[str] = Counter()
    total = focused = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        count = int(count_text)
        total += count
        start = next((i for i, frame in enumerate(frames) if frame.startswith(focus + " ")), None)
        if start is None:
            continue
        focused += count
        itself[frames[-1]] += count
        for function in {_without_line(frame) for frame in frames[start:]}:
            inclusive[function] += count
    if focused == 0:
        return f"no samples in {focus} (out of {total})"
    lines = [f"{focused} samples in {focus}, out of {total} (idle threads included)"]
    for title, counter in (("inclusive", inclusive), ("self", itself)):
        lines.append(f"-- top {top} by {title} time")
        lines += [f"{100 * n / focused:5.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(lines)


def _without_line(frame: str) -> str:
    """`f (file.py:12)` -> `f (file.py)`."""
    return re.sub(r":\d+\)$", ")", frame)
