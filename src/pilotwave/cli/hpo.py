"""``pilotwave hpo``: run a hyperparameter study from a YAML config, follow it, collect its results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pilotwave.cli.common import JsonOpt, _client, _print_json, err, out
from pilotwave.cli.workflows import FINAL, _follow, config_target


def hpo(
    target: Annotated[
        str,
        typer.Argument(
            help="CONFIG.yaml to start a study, or the id of a study started earlier.",
            metavar="CONFIG.yaml|ID",
        ),
    ],
    wait: Annotated[
        bool, typer.Option(help="Follow the study live and collect its results when it ends.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--out", help="Where result.json, plots and best models go (default hpo-ID)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Hyperparameter optimization: the study runs in a workflow, its trials as jobs on the pilots.

    A config names the objective, the search space and the budget, e.g. objective: {command: "python train.py --lr {lr}", loss_file: loss.json}  space: {lr: {type: float, low: 1.0e-4, high: 0.1, log: true}}  n_trials: 50  parallel: 8  pruner: median  segments: \\[barrel, endcap]. See examples/hpo/config.yaml and the README.

    With --wait, trials done, running, pruned and failed and the best value per segment are shown live; at the end the best parameters are printed and result.json, history and importance plots (PNG) and the best trials' output files are written to --out.
    """
    from pilotwave.hpo import config as hpo_config

    cfg: hpo_config.HpoConfig | None = None
    if target.isdigit():
        client = _client()
        wid = int(target)
        info = client.workflow(wid)
        if (info.get("progress") or {}).get("kind") != "hpo":
            err.print(f"[red]workflow {wid} ({info['name']}) is not a pilotwave hpo study[/]")
            raise typer.Exit(2)
    else:
        try:
            cfg = hpo_config.load(Path(target))
        except hpo_config.ConfigError as exc:
            err.print(f"[red]error:[/] {target}: {exc}")
            raise typer.Exit(2) from None
        client = _client()
        wid = _start(cfg, client, quiet=as_json)
        if not wait:
            if as_json:
                _print_json({"id": wid})
            else:
                out.print(
                    f"started hpo study [bold]{wid}[/]; follow it with `pilotwave hpo {wid} --wait`"
                )
            return
    state = _follow(client, wid, quiet=as_json, render=_progress) if wait else None
    info = client.workflow(wid)
    state = state or info["state"]
    if state not in FINAL:
        err.print(_progress(info))
        err.print(f"study {wid} is {state}; `pilotwave hpo {wid} --wait` collects its results")
        raise typer.Exit(0)
    if state != "succeeded":
        err.print(f"[red]study {wid} {state}[/]" + (f":\n{info['error']}" if info["error"] else ""))
        raise typer.Exit(1)
    result = info["result"]
    where = output or (cfg.output if cfg and cfg.output else None) or Path(f"hpo-{wid}")
    files = collect(client, result, where, cfg.export if cfg else None, f"hpo-{wid}")
    if as_json:
        _print_json({"id": wid, "result": result, "files": files})
        return
    out.print(_best_table(result))
    out.print(f"results:     {where / 'result.json'}")
    if files["plots"]:
        out.print(f"plots:       {where}/  ({', '.join(Path(p).name for p in files['plots'])})")
    for path in files["best"]:
        out.print(f"best model:  {path}/")
    if files["export"]:
        out.print(f"exported to {cfg.export if cfg else ''} as {', '.join(files['export'])}")


def _start(cfg: Any, client: Any, quiet: bool) -> int:
    from pilotwave.errors import ConfigError
    from pilotwave.hpo.study import optimize
    from pilotwave.sdk import client as sdk_client
    from pilotwave.sdk.jobs import JobFunction

    kwargs = dict(cfg.kwargs)
    if cfg.function:
        try:
            kwargs["objective"] = config_target(
                cfg.function, cfg.root, JobFunction, "@pw.job function", "objective.function"
            )
        except ConfigError as exc:
            err.print(f"[red]error:[/] {cfg.path.name}: {exc}")
            raise typer.Exit(2) from None
    sdk_client._default = client  # submit through this client (and its quick retry)
    flow = optimize.options(name=cfg.name, sandbox=str(cfg.root))
    try:
        run = flow.submit(**kwargs)
    except (ValueError, TypeError) as exc:
        err.print(f"[red]error:[/] {cfg.path.name}: {exc}")
        raise typer.Exit(2) from None
    if not quiet:
        err.print(f"hpo study {run.id} ({cfg.name}) started")
    return int(run.id)


def collect(
    client: Any, result: dict[str, Any], where: Path, export: str | None, study_name: str
) -> dict[str, list[str]]:
    """Write result.json, the plots and the best trials' files under ``where``; export if asked."""
    from pilotwave.hpo import export as hpo_export
    from pilotwave.hpo import plots

    where.mkdir(parents=True, exist_ok=True)
    (where / "result.json").write_text(json.dumps(result, indent=2))
    files: dict[str, list[str]] = {"plots": [], "best": [], "export": []}
    files["plots"] = [str(p) for p in plots.write_plots(result, where)]
    for name, study in hpo_export.studies(result).items():
        best = study.get("best")
        if not best or not best.get("job") or not client.artifacts(best["job"]):
            continue
        dest = where / ("best" if not name else f"best-{_safe(name)}")
        client.download(best["job"], dest)
        files["best"].append(str(dest))
    if export:
        try:
            files["export"] = hpo_export.export(result, export, study_name, overwrite=True)
        except ValueError as exc:
            err.print(f"[yellow]could not export to {export}: {exc}[/]")
    return files


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "segment"


def _progress(info: dict[str, Any]) -> Any:
    """The live view: trials done, running, pruned and failed, and the best value, per segment."""
    prog = info.get("progress") or {}
    segments = prog.get("segments") or {}
    table = Table(
        title=f"hpo study {info['id']} ({info['name']}): {info['state']}",
        title_justify="left",
        show_edge=False,
    )
    for col in ("segment", "done", "running", "pruned", "failed", "best"):
        table.add_column(col, justify="left" if col == "segment" else "right")
    for name, s in segments.items():
        done = s["complete"] + s["pruned"] + s["failed"]
        best = s.get("best")
        table.add_row(
            name or "-",
            f"{done}/{s['n_trials']}",
            str(s["running"]),
            str(s["pruned"]),
            f"[red]{s['failed']}[/]" if s["failed"] else "0",
            f"{best:.6g}" if isinstance(best, (int, float)) else "",
        )
    if not segments:
        table.add_row("(starting)", "", "", "", "", "")
    return table


def _best_table(result: dict[str, Any]) -> Table:
    from pilotwave.hpo.export import studies

    multi = len(result["directions"]) > 1
    table = Table(title="best trials", title_justify="left", show_edge=False)
    for col in ("segment", "value" if not multi else "values", "params", "trial", "job"):
        table.add_column(col)
    for name, study in studies(result).items():
        best = study.get("best")
        if best is None:
            table.add_row(name or "-", "[red]no completed trial[/]", "", "", "")
            continue
        value = best["values"] if multi else best["value"]
        shown = ", ".join(f"{v:.6g}" for v in value) if multi else f"{value:.6g}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in best["params"].items())
        table.add_row(name or "-", shown, params, str(best["trial"]), str(best["job"]))
    return table


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
