"""What every command shares: consoles, common options, the client, and formatting."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="State directory (default: $PILOTWAVE_HOME or ~/.pilotwave)."),
]


def _client() -> Any:
    from pilotwave.sdk.client import Client

    return Client(retry_for_s=3.0)  # a person is waiting: say so quickly if the server is down


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def _duration(start: float | None, end: float | None) -> str:
    if not start:
        return ""
    secs = (end or time.time()) - start
    return f"{secs:.1f}s" if secs < 120 else f"{secs / 60:.1f}m"


STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "parked": "blue",
    "queued": "",
    "pending": "dim",
}
