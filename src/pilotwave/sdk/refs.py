"""Function references: how a job names the function a pilot must import, which source tree
carries it, and (on the pilot) importing it again."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilotwave import protocol


@dataclass(frozen=True, kw_only=True)
class FunctionRef(protocol.FunctionRef):
    """A reference as the wire carries it, plus the local source tree to ship as the sandbox."""

    root: Path | None = None  # None if the code is installed on the pilots


_INSTALLED = {
    Path(p).resolve()
    for p in {
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
        sysconfig.get_paths()["stdlib"],
    }
}
_OWN_ROOT = Path(__file__).resolve().parents[2]  # where pilotwave itself is installed


def _installed(root: Path) -> bool:
    return (
        root == _OWN_ROOT
        or root in _INSTALLED
        or any(part in ("site-packages", "dist-packages") for part in root.parts)
    )


def _sandbox_root(file: str | None) -> Path | None:
    box = os.environ.get("PILOTWAVE_SANDBOX")
    if box:
        return Path(box).resolve()
    return Path(file).resolve().parent if file else None


def reference(fn: Any) -> FunctionRef:
    """Locate ``fn`` for a pilot: module and qualname, plus the source tree if it is not installed."""
    qualname = getattr(fn, "__qualname__", None)
    module_name = getattr(fn, "__module__", None)
    if not qualname or not module_name:
        raise TypeError(f"{fn!r} is not a plain function and cannot be run as a job")
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise TypeError(
            f"{module_name}.{qualname} is defined inside a function or is a lambda; "
            "job functions must be defined at the top level of a module so a pilot can import them"
        )
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    script = getattr(module, "__pw_ref_path__", None)
    if script is not None:  # a script a pilot loaded from a sandbox: refer to it the same way
        return FunctionRef(qualname=qualname, path=script, root=_sandbox_root(file))
    if file is None:
        if module_name == "__main__":
            raise TypeError(
                f"{qualname} is defined in an interactive session; put it in a module (a .py file) "
                "so a pilot can import it"
            )
        return FunctionRef(qualname=qualname, module=module_name)
    file_path = Path(file).resolve()
    if module_name == "__main__":
        root = Path(sys.path[0]).resolve() if sys.path and sys.path[0] else file_path.parent
        if not file_path.is_relative_to(root):
            root = file_path.parent
        return FunctionRef(
            qualname=qualname, path=file_path.relative_to(root).as_posix(), root=root
        )
    depth = module_name.count(".") + (1 if file_path.name == "__init__.py" else 0)
    root = file_path.parents[depth]
    return FunctionRef(
        qualname=qualname, module=module_name, root=None if _installed(root) else root
    )


def resolve(ref: dict[str, Any]) -> Any:
    """Import the function a job names and return it undecorated (on the pilot)."""
    obj = resolve_object(ref)
    return getattr(obj, "fn", obj)  # a @pw.job or @pw.workflow wrapper: call the plain function


def resolve_object(ref: dict[str, Any]) -> Any:
    """The object a reference names, as defined (a decorated function stays decorated)."""
    if ref.get("module"):
        obj: Any = importlib.import_module(ref["module"])
    else:
        path = Path(ref["path"]).resolve()
        name = "__pw_main__" + str(abs(hash(str(path))))
        obj = sys.modules.get(name)
        if obj is None:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            obj = importlib.util.module_from_spec(spec)
            obj.__pw_ref_path__ = ref["path"]  # so its functions can be referenced again
            sys.modules[name] = obj
            spec.loader.exec_module(obj)
    for part in ref["qualname"].split("."):
        obj = getattr(obj, part)
    return obj
