"""Sandboxes: the user's source directory as a deterministic, content-addressed tar.gz.

Packing skips version control, virtual environments and caches, and refuses trees over
the size limit.  Unpacking (on pilots) refuses anything that could write outside the
target: absolute names, ``..``, links, devices.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pilotwave.errors import SandboxError

MiB = 1024 * 1024
DEFAULT_LIMIT = 50 * MiB
EXCLUDED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        ".env",
        "env",
        "__pycache__",
        "node_modules",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".ipynb_checkpoints",
        ".eggs",
        "pw_outputs",
    }
)
EXCLUDED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Sandbox:
    sha256: str
    data: bytes
    files: int


def _walk(root: Path) -> list[tuple[str, Path]]:
    """(archive name, path) of every file to pack, sorted; symlinks to files inside ``root`` are followed."""
    out: list[tuple[str, Path]] = []
    root = root.resolve()
    # pilotwave's own state (database, caches, logs) when it lives inside the project
    state = Path(os.environ.get("PILOTWAVE_HOME", "~/.pilotwave")).expanduser().resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in EXCLUDED_DIRS
            and not d.endswith(".egg-info")
            and not Path(dirpath, d).is_symlink()
            and Path(dirpath, d) != state
        )
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if name.endswith(EXCLUDED_SUFFIXES):
                continue
            if path.is_symlink():
                target = path.resolve()
                if not target.is_file() or not target.is_relative_to(root):
                    continue  # a link out of the tree is not the user's source
            elif not path.is_file():
                continue
            out.append((path.relative_to(root).as_posix(), path))
    return out


def signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap fingerprint (names, sizes, mtimes) to know when a packed sandbox is still current."""
    sig = []
    for name, path in _walk(root):
        st = path.stat()
        sig.append((name, st.st_size, st.st_mtime_ns))
    return tuple(sig)


def pack(root: Path, limit: int = DEFAULT_LIMIT) -> Sandbox:
    """Pack ``root`` deterministically (sorted, zero mtimes and owners) so equal trees hash equal."""
    root = Path(root)
    if not root.is_dir():
        raise SandboxError(f"sandbox root {root} is not a directory")
    files = _walk(root)
    total = sum(p.stat().st_size for _, p in files)
    if total > limit:
        biggest = sorted(files, key=lambda f: f[1].stat().st_size, reverse=True)[:5]
        listing = ", ".join(f"{n} ({p.stat().st_size / MiB:.1f} MiB)" for n, p in biggest)
        raise SandboxError(
            f"source directory {root} holds {total / MiB:.1f} MiB, over the sandbox limit of "
            f"{limit / MiB:.0f} MiB; largest: {listing}. Move data out of the source tree "
            "(or read it from shared storage) and keep the sandbox to code."
        )
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, path in files:
            info = tarfile.TarInfo(name)
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    return Sandbox(hashlib.sha256(data).hexdigest(), data, len(files))


def check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if (
        name.startswith("/")
        or PurePosixPath(name).is_absolute()
        or (len(name) > 1 and name[1] == ":")
    ):
        raise SandboxError(f"sandbox refused: member {name!r} has an absolute path")
    if ".." in PurePosixPath(name).parts:
        raise SandboxError(f"sandbox refused: member {name!r} escapes the sandbox with '..'")
    if member.issym() or member.islnk():
        raise SandboxError(f"sandbox refused: member {name!r} is a link ({member.linkname!r})")
    if not (member.isfile() or member.isdir()):
        raise SandboxError(f"sandbox refused: member {name!r} is not a regular file or directory")


def unpack(data: bytes, dest: Path) -> None:
    """Unpack a sandbox archive into ``dest`` (created atomically) after checking every member."""
    dest = Path(dest)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = tar.getmembers()
            for m in members:
                check_member(m)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
            try:
                tar.extractall(tmp, members=members, filter="data")
                if dest.exists():  # another job unpacked the same sandbox meanwhile
                    shutil.rmtree(tmp)
                else:
                    tmp.rename(dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError) as exc:
        raise SandboxError(f"sandbox refused: not a valid archive ({exc})") from exc
