"""What runs on a pilot for one trial: the user's objective, or a command, and a checked outcome.

The outcome is a JSON object the driver reads: ``{"values": [...], "metrics": {...},
"duration_s": s}`` for a good evaluation, ``{"invalid": reason, ...}`` for one whose value
cannot be used (NaN, not a number, no loss written), ``{"pruned": step, ...}`` when the
trial stopped on the driver's answer.  An invalid value is a property of the point, not of
the machine, so it is reported rather than raised: the job is not retried for it.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pilotwave as pw


class InvalidValue(ValueError):
    """An objective's return value that the study cannot use."""


def values_of(raw: Any, objectives: Sequence[str]) -> tuple[list[float], dict[str, Any]]:
    """The objective values (one per name in ``objectives``) and the extra metrics of a return value.

    A number (one objective), a sequence of numbers (one per objective), or a mapping holding
    each objective by name plus any extra metrics.
    """
    metrics: dict[str, Any] = {}
    if isinstance(raw, Mapping):
        missing = [n for n in objectives if n not in raw]
        if missing:
            raise InvalidValue(
                f"the objective returned a dict without {', '.join(map(repr, missing))} "
                f"(its keys: {', '.join(map(repr, raw)) or 'none'})"
            )
        values = [raw[n] for n in objectives]
        metrics = {k: v for k, v in raw.items() if k not in objectives}
    elif isinstance(raw, (list, tuple)):
        if len(raw) != len(objectives):
            raise InvalidValue(
                f"the objective returned {len(raw)} values for {len(objectives)} objectives"
            )
        values = list(raw)
    else:
        values = [raw]
    out = []
    for name, v in zip(objectives, values, strict=True):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidValue(f"objective {name!r} is {v!r}, not a number")
        if not math.isfinite(v):
            raise InvalidValue(f"objective {name!r} is {v}, not a finite number")
        out.append(float(v))
    return out, _jsonable(metrics)


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(metrics, allow_nan=False)
        return metrics
    except (TypeError, ValueError):
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


@pw.job(name="trial")
def run_trial(
    objective: Any, params: dict[str, Any], segment: str | None, objectives: list[str]
) -> dict[str, Any]:
    """Evaluate ``objective(**params)`` (with ``segment=`` for a segmented study)."""
    kwargs = dict(params)
    if segment is not None:
        kwargs["segment"] = segment
    t0 = time.perf_counter()
    try:
        raw = objective(**kwargs)
    except pw.Pruned as exc:
        return {"pruned": exc.step, "duration_s": time.perf_counter() - t0}
    took = time.perf_counter() - t0
    try:
        values, metrics = values_of(raw, objectives)
    except InvalidValue as exc:
        print(f"trial failed: {exc}", file=sys.stderr)
        return {"invalid": str(exc), "duration_s": took}
    return {"values": values, "metrics": metrics, "duration_s": took}


@pw.job(name="trial")
def run_command(
    command: str,
    params: dict[str, Any],
    segment: str | None,
    trial: int,
    objectives: list[str],
    loss_file: str | None,
) -> dict[str, Any]:
    """Run a command for one trial in a private copy of the sandbox; read its loss.

    The loss is read from ``loss_file`` (JSON: a number, or an object with each objective
    by name) if given, else from the last line the command printed.  The command runs in a
    fresh directory holding links to everything in the sandbox, so parallel trials on one
    pilot do not overwrite each other's files.
    """
    box = Path(os.environ.get("PILOTWAVE_SANDBOX") or os.getcwd())
    with tempfile.TemporaryDirectory(prefix="pw-trial-") as tmp:
        work = Path(tmp)
        for entry in box.iterdir():
            (work / entry.name).symlink_to(entry)
        params_file = work / "params.json"
        params_file.unlink(missing_ok=True)
        params_file.write_text(json.dumps(params))
        argv = render(command, params, segment, trial, params_file)
        env = {**os.environ, **{f"PW_PARAM_{k}": str(v) for k, v in params.items()}}
        # `python` is the pilot's own interpreter, as in an activated virtual environment.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if segment is not None:
            env["PW_SEGMENT"] = segment
        print(f"$ {shlex.join(argv)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        last = ""
        for line in proc.stdout:  # pass it on as it comes: the job's live log
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                last = line.strip()
        code = proc.wait()
        took = time.perf_counter() - t0
        if code != 0:
            raise RuntimeError(f"the command exited with code {code}: {shlex.join(argv)}")
        try:
            raw = _read_loss(work, loss_file, last, objectives)
            values, metrics = values_of(raw, objectives)
        except InvalidValue as exc:
            print(f"trial failed: {exc}", file=sys.stderr)
            return {"invalid": str(exc), "duration_s": took}
        return {"values": values, "metrics": metrics, "duration_s": took}


def render(
    command: str, params: Mapping[str, Any], segment: str | None, trial: int, params_file: Path
) -> list[str]:
    """The command's argv: ``{name}`` placeholders filled with the trial's parameters."""
    fields = {**params, "segment": segment or "", "trial": trial, "params_file": str(params_file)}
    try:
        text = command.format(**fields)
    except KeyError as exc:
        raise ValueError(
            f"command: unknown placeholder {{{exc.args[0]}}}; use parameter names "
            f"({', '.join(params)}), {{segment}}, {{trial}} or {{params_file}}"
        ) from None
    except (IndexError, ValueError) as exc:
        raise ValueError(f"command: cannot fill in {command!r}: {exc}") from None
    return shlex.split(text)


def _read_loss(work: Path, loss_file: str | None, last_line: str, objectives: Sequence[str]) -> Any:
    if loss_file is not None:
        path = work / loss_file
        if not path.is_file():
            raise InvalidValue(f"the command wrote no loss file {loss_file}")
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise InvalidValue(f"the loss file {loss_file} is not JSON: {exc}") from None
        return data
    if not last_line:
        raise InvalidValue("the command printed nothing, so there is no loss to read")
    try:
        return json.loads(last_line)
    except ValueError:
        pass
    parts = last_line.replace(",", " ").split()
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise InvalidValue(
            f"the last line the command printed is not a loss: {last_line[:200]!r} "
            "(print the loss, or the losses separated by spaces, or JSON, last)"
        ) from None
    return numbers[0] if len(numbers) == 1 else numbers
