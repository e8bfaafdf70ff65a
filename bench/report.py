"""The figures of both servers, as a table on the terminal and as JSON."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Metric:
    name: str
    unit: str
    better: str  # "higher" or "lower"
    values: dict[str, float | None] = field(default_factory=dict)  # by product
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        isengard, orthanc = self.values.get("Isengard"), self.values.get("Orthanc")
        return isengard / orthanc if isengard is not None and orthanc else None


class Results:
    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}
        # Mean number of studies per find query: the same queries must match as much on both servers.
        self.find_matches: dict[str, dict[str, float | None]] = {}

    def record(self, name: str, unit: str, better: str, product: str, value: float | None, note: str = "") -> None:
        """A figure of one round; a metric keeps the best of the rounds (see bench.__main__)."""
        metric = self.metrics.setdefault(name, Metric(name, unit, better))
        metric.values[product] = _best(better, metric.values.get(product), value)
        if note and f"{product}: {note}" not in metric.notes:
            metric.notes.append(f"{product}: {note}")

    def record_matches(self, name: str, product: str, mean: float | None) -> None:
        self.find_matches.setdefault(name, {})[product] = mean

    def flag_mismatched_finds(self) -> None:
        for name, by_product in self.find_matches.items():
            counts = {round(v, 3) for v in by_product.values() if v is not None}
            if len(counts) > 1:
                for metric in self.metrics.values():
                    if metric.name.startswith(name + " "):
                        metric.notes.append(f"results differ: {by_product}")

    def table(self, products: list[str]) -> str:
        compare = "Orthanc" in products
        header = ["metric", "unit", *products] + (["Isengard/Orthanc", "better"] if compare else []) + ["notes"]
        rows = [header]
        for m in self.metrics.values():
            row = [m.name, m.unit, *(_number(m.values.get(p)) for p in products)]
            if compare:
                row += ["n/a" if m.ratio is None else f"{m.ratio:.2f}x", f"{m.better} is better"]
            rows.append(row + ["; ".join(m.notes)])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths[:-1]))
        return "\n".join(lines)

    def write_json(self, path: Path, context: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics = [{**asdict(m), "ratio": m.ratio} for m in self.metrics.values()]
        document = {**context, "metrics": metrics, "find_mean_matches": self.find_matches}
        path.write_text(json.dumps(document, indent=2) + "\n")


def progress(product: str, message: str) -> None:
    print(f"[{product}] {message}", flush=True)


def _best(better: str, kept: float | None, value: float | None) -> float | None:
    if kept is None or value is None:
        return value if kept is None else kept
    return max(kept, value) if better == "higher" else min(kept, value)


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
