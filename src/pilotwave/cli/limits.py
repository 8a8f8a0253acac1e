"""``pilotwave limits``: toy-based CLs on pyhf workspaces, the toys run on pilots.

Two kinds of run: an upper limit on one workspace (``pilotwave limits WORKSPACE.json``) and
a 2-D exclusion over a model family (``pilotwave limits scan CONFIG.yaml``); ``pilotwave
limits ID`` follows either and collects its results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from pilotwave.cli.common import STATE_STYLE, JsonOpt, _client, _print_json, err, out
from pilotwave.cli.workflows import FINAL, _follow, config_target

if TYPE_CHECKING:
    from pilotwave.sdk.yamlconfig import RunConfig

WORKFLOW_NAME = "limits"
LIMITS, EXCLUSION = "limits", "exclusion"  # the kinds of run, as their progress names them
SCAN_WORD = "scan"
# The drivers of each kind, for a run that has not published its progress yet.
DRIVERS = {
    ("pilotwave.limits.upper", "upper_limit"): LIMITS,
    ("pilotwave.limits.exclusion", "scan"): EXCLUSION,
}
ONE_D_OPTIONS = ("alpha", "precision", "poi_range", "poi", "toys_per_job", "max_toys", "seed")
CURVE_LABELS = {
    "observed": "observed",
    "expected-2": "expected −2σ",
    "expected-1": "expected −1σ",
    "expected0": "expected median",
    "expected+1": "expected +1σ",
    "expected+2": "expected +2σ",
}


def limits(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            help="WORKSPACE.json (pyhf HistFactory JSON) to set an upper limit, the word scan "
            "followed by CONFIG.yaml for a 2-D exclusion, or the id of a run started earlier.",
            metavar="WORKSPACE.json|scan|ID",
        ),
    ],
    config: Annotated[
        str | None,
        typer.Argument(
            help="After scan: the YAML config of the 2-D exclusion.",
            metavar="CONFIG.yaml",
            show_default=False,
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="Test size: the limit is at confidence level 1 - alpha.")
    ] = 0.05,
    precision: Annotated[
        float,
        typer.Option(
            help="Stop when the observed and median limits' uncertainties are below this "
            "fraction of them (the band's outer lines: twice this)."
        ),
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
    poi: Annotated[
        str | None,
        typer.Option(help="The parameter to set the limit on (default: the workspace's POI)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where result.json and the plot go (default limits-ID or exclusion-ID; "
            "for a scan, its config's output if set).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    wait: Annotated[
        bool,
        typer.Option(help="Follow the run live and collect its results when it ends."),
    ] = True,
) -> None:
    """Toy-based CLs on pyhf workspaces: an upper limit, or a 2-D exclusion; toys run as jobs on the pilots.

    [bold]pilotwave limits WORKSPACE.json[/]: an upper limit on the workspace's POI. The workspace's directory is shipped to the pilots. A coarse grid of POI values comes first; each next step adds points or toys only where CLs crosses alpha, until every limit (observed and the expected band) is known to --precision or --max-toys are thrown. Writes result.json and brazil.png (CLs against the POI with the expected band).

    [bold]pilotwave limits scan CONFIG.yaml[/]: the region of a two-parameter model family excluded at 1 - alpha. The config names a @pw.job factory that builds each point's workspace and the grid, e.g. factory: family.py:make_workspace  grid: {mass: {low: 100, high: 500, points: 5}, coupling: \\[0.1, 0.3, 1.0]}  toys: 300  max_steps: 3 (and optionally alpha, poi, toys_per_job, max_toys, test_stat, seed, name, output). The config's directory is shipped to the pilots. Step 1 evaluates the grid; each next step splits the cells the boundary crosses and adds toys where CLs is undecided. Writes result.json and exclusion.png (every point coloured by CLs, the observed and expected boundaries). --alpha, --precision, --poi-range, --toys-per-job, --max-toys and --seed are for an upper limit; a scan sets these in its config.

    [bold]pilotwave limits ID[/]: follow a run of either kind started earlier and collect its results. While a run goes, its progress is shown live; at the end a summary is printed and the files are written to --out.
    """
    where = output
    if target == SCAN_WORD:
        cfg, factory = _scan_config(ctx, config)
        client = _client()
        wid, kind, started = _start_scan(cfg, factory, client, quiet=as_json), EXCLUSION, True
        where = where or cfg.output
    elif config is not None:
        _refuse(
            f"unexpected {config}: only `pilotwave limits scan CONFIG.yaml` takes two arguments"
        )
    elif target.isdigit() and not Path(target).exists():
        client = _client()
        wid, started = int(target), False
        kind = _kind_of(client, wid)
    else:
        kwargs = _arguments(
            Path(target), alpha, precision, poi_range, toys_per_job, max_toys, seed, poi
        )
        client = _client()
        wid, kind, started = _start(Path(target), kwargs, client, quiet=as_json), LIMITS, True
    if started and not wait:
        if as_json:
            _print_json({"id": wid})
        else:
            what = "exclusion scan" if kind == EXCLUSION else "limits scan"
            out.print(f"started {what} [bold]{wid}[/]; collect it with `pilotwave limits {wid}`")
        return
    _finish(client, wid, kind, where, as_json, wait)


def _kind_of(client: Any, wid: int) -> str:
    """Which kind of run workflow ``wid`` is: its progress says, else its driver function does."""
    info = client.workflow(wid)
    kind = (info.get("progress") or {}).get("kind")
    if kind is None:
        fn = (client.job(info["driver_job_id"]).get("spec") or {}).get("function") or {}
        kind = DRIVERS.get((str(fn.get("module")), str(fn.get("qualname"))))
    if kind is None and info["name"] in (WORKFLOW_NAME, "upper-limit"):
        kind = LIMITS
    if kind not in (LIMITS, EXCLUSION):
        err.print(
            f"[red]workflow {wid} ({escape(info['name'])}) is not a pilotwave limits scan "
            "or exclusion scan[/]"
        )
        raise typer.Exit(2)
    return str(kind)


def _finish(
    client: Any, wid: int, kind: str, where: Path | None, as_json: bool, wait: bool
) -> None:
    """Follow the run (with ``wait``), then print its results and write their files."""
    render = _scan_progress if kind == EXCLUSION else _progress
    state = _follow(client, wid, quiet=as_json, render=render) if wait else None
    info = client.workflow(wid)
    state = state or info["state"]
    if state not in FINAL:
        err.print(render(info))
        err.print(
            f"scan {wid} is {state}; `pilotwave limits {wid}` waits for it and collects its results"
        )
        raise typer.Exit(0)
    if state != "succeeded":
        err.print(f"[red]scan {wid} {state}[/]" + (f":\n{info['error']}" if info["error"] else ""))
        raise typer.Exit(1)
    if kind == EXCLUSION:
        _report_scan(wid, info["result"], where or Path(f"exclusion-{wid}"), as_json)
    else:
        _report_limits(wid, info["result"], where or Path(f"limits-{wid}"), as_json)


def _report_limits(wid: int, result: dict[str, Any], where: Path, as_json: bool) -> None:
    files = collect(result, where)
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
    poi: str | None,
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
        "poi_name": poi,
    }
    try:
        model_and_data(str(path), poi)
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


def collect(result: dict[str, Any], where: Path, plot: str = "brazil") -> dict[str, str]:
    """Write result.json and the plot (``brazil`` or ``exclusion``) under ``where``; return their paths."""
    from pilotwave.limits import plots

    where.mkdir(parents=True, exist_ok=True)
    result_path = where / "result.json"
    result_path.write_text(json.dumps(result, indent=2))
    draw = plots.brazil if plot == "brazil" else plots.exclusion_map
    plot_path = draw(result, where / f"{plot}.png")
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


def _scan_config(ctx: typer.Context, config: str | None) -> tuple[RunConfig, Any]:
    """The scan's config and its factory, checked here before any server is asked."""
    from pilotwave.limits import exclusion
    from pilotwave.limits.config import ConfigError, check_factory, load
    from pilotwave.sdk.jobs import JobFunction

    if config is None:
        _refuse("give the scan's config: pilotwave limits scan CONFIG.yaml")
    for name in ONE_D_OPTIONS:
        source = ctx.get_parameter_source(name)  # typer's own click: compare by name
        if source is not None and source.name == "COMMANDLINE":
            flag = "--" + name.replace("_", "-")
            _refuse(f"{flag} is for an upper limit on a workspace; a scan reads {config} instead")
    try:
        cfg = load(Path(config))
        factory = config_target(cfg.target, cfg.root, JobFunction, "@pw.job function", "factory")
        check_factory(factory, cfg.kwargs["grid"])
        exclusion.check(factory, **cfg.kwargs)
    except (ConfigError, ValueError, TypeError) as exc:
        _refuse(f"{config}: {exc}")
    return cfg, factory


def _start_scan(cfg: RunConfig, factory: Any, client: Any, quiet: bool) -> int:
    from pilotwave.limits.exclusion import scan
    from pilotwave.sdk import client as sdk_client

    sdk_client._default = client  # submit through this client (and its quick retry)
    flow = scan.options(sandbox=str(cfg.root), name=cfg.name)
    try:
        run = flow.submit(factory=factory, **cfg.kwargs)
    except (ValueError, TypeError) as exc:
        _refuse(f"{cfg.path.name}: {exc}")
    if not quiet:
        err.print(f"exclusion scan {run.id} ({cfg.name}, {cfg.path.name}) started")
    return int(run.id)


def _report_scan(wid: int, result: dict[str, Any], where: Path, as_json: bool) -> None:
    files = collect(result, where, "exclusion")
    if as_json:
        _print_json({"id": wid, "result": result, "files": files})
        return
    out.print(_steps_table(result))
    out.print(_scan_summary(result))
    if not result["boundary"]["observed"]:
        out.print(
            "[yellow]no observed boundary: CLs does not cross alpha between evaluated points; "
            "widen the grid or add points[/]"
        )
    out.print(f"results: {files['result']}")
    out.print(f"plot:    {files['plot']}")


def _scan_progress(info: dict[str, Any]) -> Group:
    """The live view: the last step finished, points evaluated and excluded, toys, jobs."""
    prog = info.get("progress") or {}
    head = f"exclusion scan {info['id']} ({escape(info['name'])}): {info['state']}"
    if prog.get("kind") == EXCLUSION:
        line = (
            f"after step {prog['step']}: {prog['points']} points evaluated, "
            f"{prog['excluded']} excluded, {prog['toys']} toys thrown"
        )
    else:
        line = "step 1 (the coarse grid) running"
    counts = info.get("counts") or {}
    jobs = "jobs: " + "  ".join(
        f"[{STATE_STYLE[k]}]{k} {v}[/]" if STATE_STYLE.get(k) else f"{k} {v}"
        for k, v in sorted(counts.items())
    )
    return Group(head, line, jobs) if counts else Group(head, line)


def _steps_table(result: dict[str, Any]) -> Table:
    """Per step: the points added, the points given toys, the toys, and how many are excluded."""
    cl = 100 * (1 - result["alpha"])
    xname, yname = result["axes"]
    table = Table(
        title=f"exclusion over {xname} × {yname} at {cl:g}% CL (CLs at POI = {result['poi']:g})",
        title_justify="left",
        show_edge=False,
    )
    for col in ("step", "new points", "points with toys", "toys", "new excluded"):
        table.add_column(col, justify="right")
    for step in result["steps"]:
        added = [p for p in result["points"] if p["step"] == step["step"]]
        table.add_row(
            str(step["step"]),
            str(len(added)),
            str(len(step["points"])),
            str(step["toys"]),
            str(sum(p["excluded"] for p in added)),
        )
    return table


def _scan_summary(result: dict[str, Any]) -> str:
    points, steps = result["points"], len(result["steps"])
    excluded = sum(p["excluded"] for p in points)
    expected = sum(p["excluded_expected"] for p in points)
    failed = result["failed_toys"], result["failed_jobs"]
    failures = (
        f"[yellow]{failed[0]} failed toys, {failed[1]} failed jobs[/]"
        if any(failed)
        else "no failed toys or jobs"
    )
    boundary = result["boundary"]
    return (
        f"{excluded} of {len(points)} points excluded ({expected} expected); boundary through "
        f"{len(boundary['observed'])} points (expected {len(boundary['expected'])}); "
        f"{result['toys']} toys in {steps} step{'s' if steps != 1 else ''}; {failures}"
    )
