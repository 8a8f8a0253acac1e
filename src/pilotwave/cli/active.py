"""``pilotwave active``: run an active-learning search from a YAML config, follow it, collect it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from pilotwave.cli.common import JsonOpt, _client, _print_json, err, out
from pilotwave.cli.workflows import FINAL, _follow, config_target

if TYPE_CHECKING:
    from pilotwave.sdk.yamlconfig import RunConfig

KIND = "active"  # the kind of run, as the search's progress names it
DRIVER = ("pilotwave.active.search", "search")  # for a search that has no progress yet
LIVE_ROWS = 12  # estimates shown in the live table (the latest)


def active(
    target: Annotated[
        str,
        typer.Argument(
            help="CONFIG.yaml to start a search, or the id of a search started earlier.",
            metavar="CONFIG.yaml|ID",
        ),
    ],
    wait: Annotated[
        bool, typer.Option(help="Follow the search live and collect its results when it ends.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where result.json and the plots go (default: the config's output, or active-ID).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Active learning: a Gaussian-process surrogate chooses which points to evaluate, each evaluation a job (or a workflow) on the pilots.

    A config names the evaluation, a @pw.job or @pw.workflow returning a dict of values, the box to search and what to find, e.g. evaluate: darksector.py:point  space: {mass: {low: 15, high: 60}, coupling: {low: 1.0e-3, high: 0.1, log: true}}  goal: contour  value: \\[cls_obs, cls_exp]  level: 0.05  transform: log  budget: 40  batch: 4 (goal: maximize or minimize finds an extremum of one value; also init, seed, acquisition, grid, tol, patience, args, name, output). The config's directory is shipped to the pilots. The search stops when the budget is spent or the estimate stopped changing.

    With --wait, the evaluations done, running and failed and, per round, the excluded fraction of the box (or the best value) are shown live; at the end a summary is printed and result.json and plots (PNG: the estimated contour or surface over the evaluated points, and the history) are written to --out. `pilotwave active ID` collects a search started earlier.
    """
    cfg: RunConfig | None = None
    if target.isdigit() and not Path(target).exists():
        client = _client()
        wid = int(target)
        _check_kind(client, wid)
    else:
        cfg, evaluate = _config(target)
        client = _client()
        wid = _start(cfg, evaluate, client, quiet=as_json)
        if not wait:
            if as_json:
                _print_json({"id": wid})
            else:
                out.print(
                    f"started active search [bold]{wid}[/]; "
                    f"follow it with `pilotwave active {wid} --wait`"
                )
            return
    live = LiveView()
    state = _follow(client, wid, quiet=as_json, render=live) if wait else None
    info = client.workflow(wid)
    state = state or info["state"]
    if state not in FINAL:
        err.print(live(info))
        err.print(f"search {wid} is {state}; `pilotwave active {wid} --wait` collects its results")
        raise typer.Exit(0)
    if state != "succeeded":
        err.print(
            f"[red]search {wid} {state}[/]"
            + (f":\n{escape(info['error'])}" if info["error"] else "")
        )
        raise typer.Exit(1)
    result = info["result"]
    where = output or (cfg.output if cfg else None) or Path(f"active-{wid}")
    files = collect(result, where)
    if as_json:
        _print_json({"id": wid, "result": result, "files": files})
        return
    _report(result, files)


def _check_kind(client: Any, wid: int) -> None:
    """Refuse a workflow that is not an active search: its progress says, else its driver does."""
    info = client.workflow(wid)
    kind = (info.get("progress") or {}).get("kind")
    if kind is None:
        fn = (client.job(info["driver_job_id"]).get("spec") or {}).get("function") or {}
        if (fn.get("module"), fn.get("qualname")) == DRIVER:
            kind = KIND
    if kind != KIND:
        err.print(
            f"[red]workflow {wid} ({escape(info['name'])}) is not a pilotwave active search[/]"
        )
        raise typer.Exit(2)


def _config(target: str) -> tuple[RunConfig, Any]:
    """The config and its evaluation, checked here before any server is asked."""
    from pilotwave.active.config import load
    from pilotwave.active.search import check
    from pilotwave.sdk.jobs import JobFunction
    from pilotwave.sdk.workflows import WorkflowFunction

    try:
        cfg = load(Path(target))
        evaluate = config_target(
            cfg.target,
            cfg.root,
            (JobFunction, WorkflowFunction),
            "@pw.job or @pw.workflow",
            "evaluate",
        )
        check(evaluate, **cfg.kwargs)
    except (ValueError, TypeError) as exc:  # ConfigError and SpaceError are ValueErrors
        _refuse(f"{target}: {exc}")
    return cfg, evaluate


def _refuse(message: str) -> NoReturn:
    err.print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def _start(cfg: RunConfig, evaluate: Any, client: Any, quiet: bool) -> int:
    from pilotwave.active.search import search
    from pilotwave.sdk import client as sdk_client

    sdk_client._default = client  # submit through this client (and its quick retry)
    flow = search.options(name=cfg.name, sandbox=str(cfg.root))
    try:
        run = flow.submit(evaluate=evaluate, **cfg.kwargs)
    except (ValueError, TypeError) as exc:
        _refuse(f"{cfg.path.name}: {exc}")
    if not quiet:
        err.print(f"active search {run.id} ({cfg.name}, {cfg.path.name}) started")
    return int(run.id)


def collect(result: dict[str, Any], where: Path) -> dict[str, Any]:
    """Write result.json and the plots under ``where``; return their paths."""
    from pilotwave.active import plots

    where.mkdir(parents=True, exist_ok=True)
    result_path = where / "result.json"
    result_path.write_text(json.dumps(result, indent=2))
    written = plots.write_plots(result, where)
    return {"result": str(result_path), "plots": [str(p) for p in written]}


# -- while it runs ----------------------------------------------------------------------------


class LiveView:
    """The live view: the evaluations so far and one row per estimate seen (a finished round).

    The search publishes only its latest round; each time the estimate changes, a row is
    added, so a round that came and went between two looks is not shown (the final table is
    the result's, complete).
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, info: dict[str, Any]) -> Group:
        prog = info.get("progress") or {}
        head = f"active search {info['id']} ({escape(info['name'])}): {info['state']}"
        if prog.get("kind") != KIND:
            return Group(head, "the initial design is being evaluated")
        finished = prog["evaluated"] + prog["failed"]
        failed = f"[red]{prog['failed']} failed[/]" if prog["failed"] else "0 failed"
        line = (
            f"{finished}/{prog['budget']} evaluations ({failed}), {prog['running']} running, "
            f"round {prog['round']}"
        )
        self._note(prog, finished)
        return Group(head, line, self._table(prog))

    def _note(self, prog: dict[str, Any], finished: int) -> None:
        estimate = (prog.get("change"), json.dumps(prog.get("below")), prog.get("best"))
        if estimate == (None, "null", None):
            return
        if not self.rows or self.rows[-1]["estimate"] != estimate:
            self.rows.append({"estimate": estimate, "evaluations": finished, **prog})

    def _table(self, prog: dict[str, Any]) -> Table:
        names = list(prog.get("below") or {})
        table = Table(show_edge=False)
        table.add_column("evaluations", justify="right")
        for name in names:
            table.add_column(f"{name} below", justify="right")
        if prog.get("goal") != "contour":
            table.add_column(f"best ({prog.get('goal')})", justify="right")
        table.add_column("change", justify="right")
        for row in self.rows[-LIVE_ROWS:]:
            cells = [str(row["evaluations"])]
            cells += [_fraction((row.get("below") or {}).get(n)) for n in names]
            if prog.get("goal") != "contour":
                cells.append(_number(row.get("best")))
            cells.append(_number(row.get("change")))
            table.add_row(*cells)
        if not self.rows:
            table.add_row("(first round running)", *[""] * (len(table.columns) - 1))
        return table


# -- the report -------------------------------------------------------------------------------


def _report(result: dict[str, Any], files: dict[str, Any]) -> None:
    out.print(_rounds_table(result))
    if result["goal"] == "contour":
        out.print(_contour_table(result))
    else:
        out.print(_best_line(result))
    out.print(_summary_line(result))
    errors = [p["error"] for p in result["points"] if p["state"] == "failed" and p["error"]]
    if errors:
        out.print(f"[yellow]the first failure: {escape(errors[0])}[/]")
    out.print(f"results: {files['result']}")
    if files["plots"]:
        where = Path(files["result"]).parent
        out.print(f"plots:   {where}/  ({', '.join(Path(p).name for p in files['plots'])})")


def _rounds_table(result: dict[str, Any]) -> Table:
    """Per round: evaluations so far, failures, the excluded fraction or best value, change."""
    contour = result["goal"] == "contour"
    table = Table(title="rounds", title_justify="left", show_edge=False)
    for col in ("round", "evaluations", "failed"):
        table.add_column(col, justify="right")
    for name in result["values"] if contour else ():
        table.add_column(f"{name} < {result['level']:g}", justify="right")
    if not contour:
        table.add_column(f"best {result['values'][0]}", justify="right")
    table.add_column("change", justify="right")
    for r in result["rounds"]:
        cells = [str(r["round"]), str(r["evaluations"]), str(r["failed"])]
        if contour:
            below = r.get("below") or [None] * len(result["values"])
            cells += [_fraction(b) for b in below]
        else:
            cells.append(_number(r.get("best")))
        cells.append(_number(r.get("change")))
        table.add_row(*cells)
    return table


def _contour_table(result: dict[str, Any]) -> Table:
    """Per value: the fraction of the box where its estimated mean is below the level."""
    table = Table(
        title=f"estimate: where each value is below {result['level']:g}",
        title_justify="left",
        show_edge=False,
    )
    table.add_column("value")
    table.add_column("excluded fraction of the box", justify="right")
    estimate = result.get("estimate") or {}
    for name in result["values"]:
        below = ((estimate.get("values") or {}).get(name) or {}).get("below")
        table.add_row(name, _fraction(_mean_of(below)) if below is not None else "[red]none[/]")
    return table


def _best_line(result: dict[str, Any]) -> str:
    best = result.get("best")
    if not best:
        return "[red]no evaluation succeeded: no best point[/]"
    params = ", ".join(f"{k}={_number(v)}" for k, v in best["params"].items())
    if result.get("transform") == "log":  # the std is on the log scale: a factor
        spread = f"×/÷ {math.exp(best['std']):.3g}"
    else:
        spread = f"± {best['std']:.2g}"
    return (
        f"best ({result['goal']} {result['values'][0]}): {params}: "
        f"{best['value']:.6g} {spread} (surrogate), measured {best['measured']:.6g}"
    )


def _summary_line(result: dict[str, Any]) -> str:
    rounds = len(result["rounds"])
    failed = result["failed"]
    failures = f"[yellow]{failed} failed[/]" if failed else "none failed"
    stopped = {
        "converged": "[green]converged[/] (the estimate stopped changing)",
        "budget": "[yellow]the budget was spent[/] (not converged)",
    }.get(result["stopped"], result["stopped"])
    return (
        f"{result['evaluations']} points ({failures}) in {rounds} "
        f"round{'s' if rounds != 1 else ''}; stopped: {stopped}"
    )


def _mean_of(nested: Any) -> float:
    """The fraction of true cells in a nested list of booleans."""
    flat: list[bool] = []
    stack = [nested]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            flat.append(bool(item))
    return sum(flat) / len(flat) if flat else 0.0


def _fraction(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def _number(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
