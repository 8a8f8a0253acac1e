"""Function references: how a job names the function a pilot must import, and which source tree carries it."""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pilotwave


@dataclass(frozen=True)
class FunctionRef:
    qualname: str
    module: str | None = None  # importable module name
    path: str | None = None  # script path relative to the sandbox root (for __main__)
    root: Path | None = None  # local source tree to ship as the sandbox; None if installed

    def as_json(self) -> dict[str, Any]:
        return {"module": self.module, "path": self.path, "qualname": self.qualname}

    def __str__(self) -> str:
        return f"{self.module or self.path}:{self.qualname}"


_INSTALLED = {
    Path(p).resolve()
    for p in {
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
        sysconfig.get_paths()["stdlib"],
    }
}
_OWN_ROOT = Path(pilotwave.__file__).resolve().parents[1]


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
        return FunctionRef(qualname, path=script, root=_sandbox_root(file))
    if file is None:
        if module_name == "__main__":
            raise TypeError(
                f"{qualname} is defined in an interactive session; put it in a module (a .py file) "
                "so a pilot can import it"
            )
        return FunctionRef(qualname, module=module_name)
    file_path = Path(file).resolve()
    if module_name == "__main__":
        root = Path(sys.path[0]).resolve() if sys.path and sys.path[0] else file_path.parent
        if not file_path.is_relative_to(root):
            root = file_path.parent
        return FunctionRef(qualname, path=file_path.relative_to(root).as_posix(), root=root)
    depth = module_name.count(".") + (1 if file_path.name == "__init__.py" else 0)
    root = file_path.parents[depth]
    return FunctionRef(qualname, module=module_name, root=None if _installed(root) else root)
