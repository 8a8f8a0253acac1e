"""``pilotwave limits``: a toy-based CLs upper limit on a pyhf workspace, its toys run on pilots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from pilotwave.cli.common import JsonOpt, _client, _print_json, err, out
from pilotwave.cli.workflows import FINAL, _follow

WORKFLOW_NAME = "limits"
CURVE_LABELS = {
    "observed": "observed",
    "expected-2": "expected −2σ",
    "expected-1": "expected −1σ",
    "expected0": "expected median",
    "expected+1": "expected +1σ",
    "expected+2": "expected +2σ",
}


def limits(
    target: Annotated[
        str,
        typer.Argument(
            help="WORKSPACE.json (pyhf HistFactory JSON) to start a scan, or the id of a scan started earlier.",
            metavar="WORKSPACE.json|ID",
        ),
    ],
    alpha: Annotated[
        float, typer.Option(help="Test size: the limit is at confidence level 1 - alpha.")
    ] = 0.05,
    precision: Annotated[
        float,
        typer.Option(help="Stop when every limit's uncertainty is below this fraction of it."),
    ] = 0.05,
    poi_range: Annotated[
        tuple[float, float] | None,
        typer.Option(
            help="POI values to scan, LO HI (default: the POI's bounds in the workspace).",
            metavar="LO HI",
            show_default=False,
        ),
    ] = None,
    toys_per_job: Annotated[
        int, typer.Option(help="Toy pairs (s+b and b-only) thrown by one job.")
    ] = 250,
    max_toys: Annotated[
        int, typer.Option(help="Toy budget: no new step starts once this many were thrown.")
    ] = 100_000,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the toys (default: random); same seed, same toys.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--out", help="Where result.json and brazil.png go (default limits-ID)."),
    ] = None,
    as_json: JsonOpt = False,
    wait: Annotated[
        bool,
        typer.Option(help="Follow the scan live and collect its results when it ends."),
    ] = True,
) -> None:
    """CLs upper limit from toys: the scan runs in a workflow, its toys as jobs on the pilots.

    The workspace's directory is shipped to the pilots, and the toy jobs read the workspace from it. A coarse grid of POI values comes first; each next step adds points or toys only where CLs crosses alpha, until every limit (observed and the expected band) is known to --precision or --max-toys are thrown.

    While it runs, the step, toys thrown and current limits are shown live; at the end the observed and expected limits are printed and result.json and brazil.png (CLs against the POI with the expected band) are written to --out.
    """
    if target.isdigit() and not Path(target).exists():
        client = _client()
        wid = int(target)
        info = client.workflow(wid)
        kind = (info.get("progress") or {}).get("kind")
        if kind != "limits" and info["name"] not in (WORKFLOW_NAME, "upper-limit"):
            err.print(f"[red]workflow {wid} ({info['name']}) is not a pilotwave limits scan[/]")
            raise typer.Exit(2)
    else:
        kwargs = _arguments(Path(target), alpha, precision, poi_range, toys_per_job, max_toys, seed)
        client = _client()
        wid = _start(Path(target), kwargs, client, quiet=as_json)
        if not wait:
            if as_json:
                _print_json({"id": wid})
            else:
                out.print(
                    f"started limits scan [bold]{wid}[/]; collect it with `pilotwave limits {wid}`"
                )
            return
    state = _follow(client, wid, quiet=as_json, render=_progress) if wait else None
    info = client.workflow(wid)
    state = state or info["state"]
    if state not in FINAL:
        err.print(_progress(info))
        err.print(
            f"scan {wid} is {state}; `pilotwave limits {wid}` waits for it and collects its results"
        )
        raise typer.Exit(0)
    if state != "succeeded":
        err.print(f"[red]scan {wid} {state}[/]" + (f":\n{info['error']}" if info["error"] else ""))
        raise typer.Exit(1)
    result = info["result"]
    files = collect(result, output or Path(f"limits-{wid}"))
    if as_json:
        _print_json({"id": wid, "result": result, "files": files})
    elif result["points"]:
        out.print(_result_table(result))
        for note in _missing(result):
            out.print(note)
        out.print(_summary_line(result))
        out.print(f"results: {files['result']}")
        out.print(f"plot:    {files['plot']}")
    if not result["points"]:  # the workflow ended, but no toy job gave anything to compute CLs from
        err.print(
            f"[red]scan {wid} has no CLs point: its {result['failed_jobs']} toy jobs failed[/]; "
            f"`pilotwave status {wid} --events` tells why"
        )
        raise typer.Exit(1)


def _arguments(
    path: Path,
    alpha: float,
    precision: float,
    poi_range: tuple[float, float] | None,
    toys_per_job: int,
    max_toys: int,
    seed: int | None,
) -> dict[str, Any]:
    """The workflow's arguments, checked here (the workspace too) before any server is asked."""
    from pilotwave.limits.toys import model_and_data
    from pilotwave.limits.upper import check

    kwargs: dict[str, Any] = {
        "workspace": path.name,  # read from the sandbox (the workspace's directory) on a pilot
        "alpha": alpha,
        "precision": precision,
        "poi_range": list(poi_range) if poi_range is not None else None,
        "toys_per_job": toys_per_job,
        "max_toys": max_toys,
        "seed": seed,
    }
    try:
        model_and_data(str(path))
    except ValueError as exc:
        _refuse(_one_line(str(exc)))
    try:
        check(**kwargs)
    except ValueError as exc:
        _refuse(str(exc))
    return kwargs


def _refuse(message: str) -> NoReturn:
    err.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def _one_line(message: str) -> str:
    """pyhf's schema errors run over lines (and repeat the whole input): keep what and where."""
    first, *rest = message.splitlines() or [""]
    where = next((r.strip()[5:].strip() for r in rest if r.strip().startswith("Path:")), "")
    return f"{first.rstrip('.')} (at {where})" if where else first


def _start(path: Path, kwargs: dict[str, Any], client: Any, quiet: bool) -> int:
    from pilotwave.limits.upper import upper_limit
    from pilotwave.sdk import client as sdk_client

    sdk_client._default = client  # submit through this client (and its quick retry)
    flow = upper_limit.options(sandbox=str(path.resolve().parent), name=WORKFLOW_NAME)
    try:
        run = flow.submit(**kwargs)
    except (ValueError, TypeError) as exc:
        _refuse(str(exc))
    if not quiet:
        err.print(f"limits scan {run.id} ({path.name}) started")
    return int(run.id)


def collect(result: dict[str, Any], where: Path) -> dict[str, str]:
    """Write result.json and brazil.png under ``where``; return their paths."""
    from pilotwave.limits import plots

    where.mkdir(parents=True, exist_ok=True)
    result_path = where / "result.json"
    result_path.write_text(json.dumps(result, indent=2))
    plot_path = plots.brazil(result, where / "brazil.png")
    return {"result": str(result_path), "plot": str(plot_path)}


def _progress(info: dict[str, Any]) -> Group:
    """The live view: step, toys thrown, points evaluated, and each limit as it stands."""
    prog = info.get("progress") or {}
    head = f"limits scan {info['id']}: {info['state']}"
    if prog:
        head += f", step {prog['step']}: {prog['toys']} toys at {prog['points']} points"
    table = Table(show_edge=False)
    for col in ("curve", "limit", "±"):
        table.add_column(col, justify="left" if col == "curve" else "right")
    found = prog.get("limits") or {}
    for key, label in CURVE_LABELS.items():
        if key in found:
            table.add_row(label, *_cells(found[key]))
    if not found:
        table.add_row("(first step running)", "", "")
    return Group(head, table)


def _curves(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The result's limits by curve name, as the workflow's progress names them."""
    return {"observed": result["observed"]} | {
        f"expected{n}": v for n, v in result["expected"].items()
    }


def _result_table(result: dict[str, Any]) -> Table:
    cl = 100 * (1 - result["alpha"])
    table = Table(
        title=f"CLs upper limits at {cl:g}% CL ({result['test_stat']})",
        title_justify="left",
        show_edge=False,
    )
    for col in ("curve", "limit", "±", "relative"):
        table.add_column(col, justify="left" if col == "curve" else "right")
    curves = _curves(result)
    for key, label in CURVE_LABELS.items():
        lim = curves.get(key) or {}
        value, unc = lim.get("limit"), lim.get("uncertainty")
        rel = f"{100 * unc / abs(value):.1f}%" if value and unc is not None else ""
        table.add_row(label, *_cells(lim), rel)
    return table


def _cells(lim: dict[str, Any]) -> tuple[str, str]:
    value, unc = lim.get("limit"), lim.get("uncertainty")
    if value is None:
        return "[red]none[/]", ""
    return f"{value:.4g}", f"{unc:.2g}" if unc is not None else ""


def _missing(result: dict[str, Any]) -> list[str]:
    """Why the limits that were not found are missing, and what to change (one line per cause)."""
    lo, hi = result["poi_range"]
    curves = _curves(result)
    by_reason: dict[str, list[str]] = {}
    for key, label in CURVE_LABELS.items():
        lim = curves.get(key) or {}
        if lim.get("limit") is None:
            by_reason.setdefault(lim.get("reason") or "not found", []).append(label)
    notes = []
    for reason, labels in by_reason.items():
        hint = ""
        if "above" in reason:
            hint = f"; scan beyond {hi:g} with --poi-range"
        elif "below" in reason:
            hint = f"; more steps (raise --max-toys) look between {lo:g} and the first point"
        notes.append(f"[yellow]no {', '.join(labels)} limit: {escape(reason)}{hint}[/]")
    return notes


def _summary_line(result: dict[str, Any]) -> str:
    steps = len(result["steps"])
    failed = result["failed_toys"], result["failed_jobs"]
    failures = (
        f"[yellow]{failed[0]} failed toys, {failed[1]} failed jobs[/]"
        if any(failed)
        else "no failed toys or jobs"
    )
    if result["converged"]:
        converged = "[green]converged[/]"
    elif _missing(result):
        converged = "[yellow]not converged[/] (some limits were not found)"
    else:
        converged = "[yellow]not converged[/] (toy budget or step limit reached; raise --max-toys)"
    return (
        f"{result['toys']} toys in {steps} step{'s' if steps != 1 else ''} "
        f"at {len(result['points'])} points; {failures}; {converged}"
    )
