"""Runs a real crawl in a subprocess and returns what it did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CrawlResult:
    items: list[dict[str, Any]]
    stats: dict[str, Any]
    finish_reason: str | None
    log: str
    returncode: int

    def by_index(self) -> dict[int, dict[str, Any]]:
        return {item["index"]: item for item in self.items}


def run_crawl(
    settings: dict[str, Any], pages: list[dict[str, Any]], timeout: float = 120
) -> CrawlResult:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.crawl.run",
                str(out),
                json.dumps(settings),
                json.dumps(pages),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        data = json.loads(out.read_text()) if out.exists() else {"items": [], "stats": {}}
    return CrawlResult(
        items=data["items"],
        stats=data["stats"],
        finish_reason=data.get("finish_reason"),
        log=proc.stderr,
        returncode=proc.returncode,
    )
