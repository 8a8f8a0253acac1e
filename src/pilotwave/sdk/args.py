"""How job and workflow arguments travel: futures become dependencies, functions become references.

A ``Future`` (or a workflow ``Run``) passed as an argument, also inside lists and dicts, is
sent as ``{"$pw_future": id}`` (``protocol.FUTURE``): the server holds the job until that one
succeeds and puts its result there.  A ``@pw.job`` or ``@pw.workflow`` function is sent as
``{"$pw_function": {...}}`` and arrives as the same decorated function, with its options,
ready to call or submit (the pilot's worker turns it back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pilotwave.protocol import FUNCTION, FUTURE
from pilotwave.sdk.futures import Future, Run


@dataclass
class Encoded:
    value: Any
    roots: set[Path] = field(default_factory=set)  # source trees of functions passed along
    upstream: list[int] = field(default_factory=list)


def encode(value: Any) -> Encoded:
    out = Encoded(None)
    out.value = _encode(value, out)
    return out


def _encode(value: Any, out: Encoded) -> Any:
    if isinstance(value, Run):
        value = value.future
    if isinstance(value, Future):
        if value.local:  # ran in this process already: pass its value
            return value.result()
        out.upstream.append(value.id)
        return {FUTURE: value.id}
    kind = getattr(value, "pw_kind", None)  # a @pw.job or @pw.workflow function
    if kind in ("job", "workflow"):
        ref = value.ref
        if ref.root is not None:
            out.roots.add(ref.root)
        return {FUNCTION: {"kind": kind, "ref": ref.as_json(), "options": value.options_json()}}
    if isinstance(value, dict):
        return {k: _encode(v, out) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, out) for v in value]
    if callable(value) and hasattr(value, "__qualname__") and not isinstance(value, type):
        raise TypeError(
            f"{value.__qualname__} is a plain function; decorate it with @pw.job or @pw.workflow "
            "to pass it to a job or workflow"
        )
    return value


def local_args(args: Any, kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Arguments for a local call: futures replaced by their values, functions kept as they are."""
    return [_local(a) for a in args], {k: _local(v) for k, v in kwargs.items()}


def _local(value: Any) -> Any:
    if isinstance(value, (Future, Run)):
        return value.result()
    if isinstance(value, dict):
        return {k: _local(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_local(v) for v in value]
    return value
