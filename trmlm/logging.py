"""Metric loggers behind one interface; the default does nothing (so the loop has no branches)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


class Logger:
    """Interface and no-op default."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlLogger(Logger):
    """Appends one JSON object per call to a .jsonl file (step, wall time, metrics)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a")
        self._t0 = time.time()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, "time": round(time.time() - self._t0, 3)}
        for k, v in metrics.items():
            v = float(v) if hasattr(v, "item") else v
            row[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class MultiLogger(Logger):
    def __init__(self, *loggers: Logger) -> None:
        self.loggers = loggers

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log(step, metrics)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
