"""Workflow commands: ``submit``, ``workflows``, ``status``, ``cancel``, ``suspend``, ``resume``, ``retry``."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table
from rich.tree import Tree

from pilotwave.cli.common import (
    STATE_STYLE,
    JsonOpt,
    _client,
    _duration,
    _print_json,
    _when,
    err,
    out,
)
from pilotwave.errors import PilotwaveError

FINAL = ("succeeded", "failed", "cancelled")
TREE_JOBS = 30  # more jobs than this in one workflow are shown grouped by name


def load_workflow(target: str) -> Any:
    """``module:function`` or ``path/to/file.py:function`` -> the ``@pw.workflow`` it names."""
    from pilotwave.sdk.workflows import WorkflowFunction

    return load_target(
        target,
        WorkflowFunction,
        "@pw.workflow function",
        "MODULE:WORKFLOW, e.g. flows:train or examples/diamond.py:diamond",
        "TARGET",
    )


def load_target(
    target: str,
    kind: type | tuple[type, ...],
    what: str,
    usage: str,
    hint: str,
    base: Path | None = None,
) -> Any:
    """Import the ``kind`` object ``target`` names (``module:name`` or ``file.py:name``, from ``base``)."""
    base = base or Path.cwd()
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise typer.BadParameter(f"give {usage}", param_hint=hint)
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = (base / module_name).resolve()
            if not path.is_file():
                raise typer.BadParameter(f"no file {module_name}", param_hint=hint)
            sys.path.insert(0, str(path.parent))
            module = importlib.import_module(path.stem)
        else:
            sys.path.insert(0, str(base))
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(f"cannot import {module_name}: {exc}", param_hint=hint) from None
    except typer.BadParameter:
        raise
    except Exception as exc:  # the user's module raised while being imported
        raise typer.BadParameter(
            f"importing {module_name} failed: {exc!r}", param_hint=hint
        ) from None
    if not hasattr(module, attr):
        raise typer.BadParameter(f"{module_name} has no {attr!r}", param_hint=hint)
    obj = getattr(module, attr)
    if not isinstance(obj, kind):
        found = type(obj).__name__
        raise typer.BadParameter(
            f"{module_name}:{attr} is a {found}, not a {what}", param_hint=hint
        )
    return obj


def config_target(
    target: str, root: Path, kind: type | tuple[type, ...], what: str, key: str
) -> Any:
    """Import the function a YAML config names under ``key``, relative to the config's directory.

    Raises ``ConfigError`` naming the key, like the config's other settings.
    """
    from pilotwave.errors import ConfigError

    usage = f"{key} as file.py:NAME or MODULE:NAME"
    try:
        return load_target(target, kind, what, usage, key, base=root)
    except typer.BadParameter as exc:
        raise ConfigError(f"{key}: {exc.message}") from None


def parse_args(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; values are JSON when they parse as JSON (numbers, lists…), else strings."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--arg")
        try:
            kwargs[key] = json.loads(raw)
        except ValueError:
            kwargs[key] = raw
    return kwargs


def submit(
    target: Annotated[str, typer.Argument(help="MODULE:WORKFLOW or path/to/file.py:WORKFLOW.")],
    arg: Annotated[
        list[str], typer.Option("--arg", "-a", help="Workflow argument NAME=VALUE (repeat).")
    ] = [],  # noqa: B006
    wait: Annotated[bool, typer.Option(help="Wait for the result, showing progress.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start a workflow on the server (its code is shipped from this directory)."""
    flow = load_workflow(target)
    kwargs = parse_args(arg)
    from pilotwave.sdk import client as sdk_client

    client = _client()
    sdk_client._default = client  # flow.submit uses this client (and its quick retry)
    run = flow.submit(**kwargs)
    if not wait:
        if as_json:
            _print_json({"id": run.id, "name": run.name, "driver_job_id": run.future.id})
        else:
            out.print(
                f"submitted workflow [bold]{run.id}[/] ({run.name}); see `pilotwave status {run.id}`"
            )
        return
    if not as_json:
        err.print(f"workflow {run.id} ({run.name}) submitted")
    state = _follow(client, run.id, quiet=as_json)
    info = client.workflow(run.id)
    if as_json:
        _print_json(_summary(info))
    elif state == "succeeded":
        out.print(json.dumps(info["result"], indent=2))
    else:
        err.print(
            f"[red]workflow {run.id} {state}[/]" + (f":\n{info['error']}" if info["error"] else "")
        )
    raise typer.Exit(0 if state == "succeeded" else 1)


def _follow(
    client: Any, wid: int, quiet: bool, render: Callable[[dict[str, Any]], Any] | None = None
) -> str:
    """Wait for the workflow's driver to finish, showing its job counts (or ``render(status)``) live."""
    render = render or _counts_line
    info = client.workflow(wid)
    driver = info["driver_job_id"]
    if quiet:
        while info["state"] not in FINAL:
            client.job(driver, wait_s=30)
            info = client.workflow(wid)
        return str(info["state"])
    with Live(render(info), console=err, refresh_per_second=4, transient=True) as live:
        while info["state"] not in FINAL:
            try:
                client.job(driver, wait_s=0.5)  # long-poll: returns at once when it ends
            except PilotwaveError:
                time.sleep(0.5)
            info = client.workflow(wid)
            live.update(render(info))
    err.print(render(info))
    return str(info["state"])


def _counts_line(info: dict[str, Any]) -> str:
    counts = "  ".join(
        f"[{STATE_STYLE.get(k, '')}]{k} {v}[/]" if STATE_STYLE.get(k) else f"{k} {v}"
        for k, v in sorted(info["counts"].items())
    )
    return f"workflow {info['id']} {info['name']}: {info['state']}   jobs: {counts}"


def _summary(info: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "name", "state", "counts", "result", "error", "parent_id", "driver_job_id")
    out_ = {k: info.get(k) for k in keep}
    out_["created_at"], out_["finished_at"] = info.get("created_at"), info.get("finished_at")
    return out_


def workflows(
    state: Annotated[
        list[str], typer.Option(help="Only workflows in this state (repeatable).")
    ] = [],  # noqa: B006
    nested: Annotated[bool, typer.Option(help="Include nested workflows.")] = False,
    limit: Annotated[int, typer.Option(help="How many (newest first).")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List your workflows, newest first."""
    rows = _client().workflows(state=state, nested=nested, limit=limit)
    if as_json:
        _print_json(rows)
        return
    table = Table(box=None)
    for col in ("id", "name", "state", "parent", "submitted", "ran"):
        table.add_column(col)
    for w in rows:
        style = STATE_STYLE.get(w["state"], "")
        table.add_row(
            str(w["id"]),
            w["name"][:40],
            f"[{style}]{w['state']}[/]" if style else w["state"],
            str(w["parent_id"] or ""),
            _when(w["created_at"]),
            _duration(w["created_at"], w["finished_at"]),
        )
    out.print(table)


def status(
    workflow_id: int,
    events: Annotated[bool, typer.Option(help="Show the story of every job.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a workflow: state, job counts, the tree of its jobs and nested workflows, its result."""
    client = _client()
    info = client.workflow(workflow_id)
    if events:
        info["events"] = client.workflow_events(workflow_id)
    if as_json:
        _print_json(info)
        return
    out.print(_tree(info))
    if info["state"] == "succeeded":
        out.print("result:", json.dumps(info["result"])[:2000])
    elif info.get("error"):
        out.print(f"[red]error:[/]\n{info['error']}")
    for e in info.get("events", []):
        out.print(
            f"  {_when(e['ts'])} job {e['job_id']:<6} {e['job_name'][:24]:<24} "
            f"{e['from_state'] or '':>9} → {e['to_state']:<9} {e['reason']}"
        )


def _tree(info: dict[str, Any], tree: Tree | None = None) -> Tree:
    style = STATE_STYLE.get(info["state"], "")
    counts = ", ".join(f"{v} {k}" for k, v in sorted(info["counts"].items()))
    label = (
        f"[bold]workflow {info['id']}[/] {info['name']}  [{style}]{info['state']}[/]  ({counts})"
    )
    node = tree.add(label) if tree is not None else Tree(label)
    children = {c["driver_job_id"]: c for c in info.get("children", [])}
    own = [
        j
        for j in info["jobs"]
        if j["id"] not in children
        and not (j["kind"] == "driver" and j["id"] == info["driver_job_id"])
    ]
    if len(own) > TREE_JOBS:  # a wide fan-out: one line per job name with its states
        groups: dict[str, dict[str, int]] = {}
        for j in own:
            states = groups.setdefault(j["name"], {})
            states[j["state"]] = states.get(j["state"], 0) + 1
        for name, states in groups.items():
            node.add(
                f"{name[:40]} × {sum(states.values())}: "
                + ", ".join(f"{n} {st}" for st, n in sorted(states.items()))
            )
    else:
        for j in own:
            js = STATE_STYLE.get(j["state"], "")
            node.add(
                f"job {j['id']} {j['name'][:40]}  [{js}]{j['state']}[/]  "
                f"{_duration(j['started_at'], j['finished_at'])}"
            )
    for c in info.get("children", []):
        _tree(c, node)
    return node


def _op(workflow_id: int, op: str) -> dict[str, Any]:
    return dict(_client().workflow_op(workflow_id, op))


def cancel(
    ids: Annotated[list[int], typer.Argument(help="Workflow ids (job ids with --jobs).")],
    jobs: Annotated[bool, typer.Option("--jobs", help="The ids are job ids.")] = False,
) -> None:
    """Cancel workflows (every unfinished job in them), or single jobs with --jobs."""
    client = _client()
    if jobs:
        done = client.cancel(ids)
        out.print(
            f"cancelled {len(done)} job(s)"
            + (f": {', '.join(map(str, done))}" if done else " (all were finished)")
        )
        return
    for wid in ids:
        n = client.workflow_op(wid, "cancel")["cancelled"]
        out.print(f"workflow {wid}: cancelled {n} job(s)" + ("" if n else " (it was finished)"))


def suspend(workflow_id: int) -> None:
    """Hold a workflow: none of its jobs is dispatched until `resume` (running ones finish)."""
    out.print(f"workflow {workflow_id} is {_op(workflow_id, 'suspend')['state']}")


def resume(workflow_id: int) -> None:
    """Release a suspended workflow's jobs."""
    out.print(f"workflow {workflow_id} is {_op(workflow_id, 'resume')['state']}")


def retry(workflow_id: int) -> None:
    """Re-run a failed or cancelled workflow from where it stopped; succeeded jobs are not re-run."""
    res = _op(workflow_id, "retry")
    out.print(
        f"workflow {workflow_id}: {res['reset']} job(s) reset; its driver replays and goes on"
    )


COMMANDS: list[Callable[..., None]] = [submit, workflows, status, cancel, suspend, resume, retry]
