"""Sandboxes: the user's source directory as a deterministic, content-addressed tar.gz.

Packing skips version control, virtual environments and caches, and refuses trees over
the size limit.  Unpacking (on pilots) refuses anything that could write outside the
target: absolute names, ``..``, links, devices.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

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


@dataclass(frozen=True)
class UnpackLimits:
    """What a pilot accepts when it unpacks a sandbox: a small archive must not fill its disk."""

    max_bytes: int = 1024 * MiB
    """Total size of the files, unpacked."""
    max_files: int = 100_000
    max_ratio: int = 100
    """Unpacked size over archive size, beyond ``ratio_floor``: source code compresses a few
    times, a bomb a thousand."""
    ratio_floor: int = 64 * MiB

    def cap(self, packed: int) -> int:
        return min(self.max_bytes, max(self.ratio_floor, self.max_ratio * packed))


class _Counted(io.RawIOBase):
    """The decompressed archive stream, refused once it runs past ``cap`` bytes (tar headers
    included), before anything larger is read or held in memory."""

    def __init__(self, raw: io.BufferedIOBase, cap: int, packed: int) -> None:
        self.raw, self.cap, self.packed, self.seen = raw, cap, packed, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.raw.readinto(b)
        self.seen += n
        if self.seen > self.cap:
            raise SandboxError(
                f"sandbox refused: its {self.packed} bytes unpack to more than {self.cap} "
                f"bytes (limit {self.cap / MiB:.0f} MiB)"
            )
        return n


def unpack(data: bytes, dest: Path, limits: UnpackLimits | None = None) -> int:
    """Unpack a sandbox archive into ``dest`` (created atomically), checking every member
    before it is written; returns the bytes unpacked.

    Refused with ``SandboxError``: names that leave ``dest``, links and devices, and archives
    over ``limits`` (total size, file count, expansion ratio), detected while streaming, so
    a bomb costs at most the limit in time and disk.
    """
    dest = Path(dest)
    limits = limits or UnpackLimits()
    cap = limits.cap(len(data))
    packed = io.BytesIO(data)
    raw: io.BufferedIOBase = gzip.GzipFile(fileobj=packed) if data[:2] == b"\x1f\x8b" else packed
    # Headers count toward the stream's cap as well: a tar holds 1 KiB or so per file.
    stream = _Counted(raw, cap + 2048 * limits.max_files, len(data))
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        files = total = 0
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                check_member(member)
                files += 1
                total += member.size
                if files > limits.max_files:
                    raise SandboxError(
                        f"sandbox refused: more than {limits.max_files} files in the archive"
                    )
                if total > cap:
                    raise SandboxError(
                        f"sandbox refused: its {len(data)} bytes unpack to more than {cap} "
                        f"bytes (limit {cap / MiB:.0f} MiB)"
                    )
                tar.extract(member, tmp, filter="data")
        if dest.exists():  # another job unpacked the same sandbox meanwhile
            remove_tree(tmp)
        else:
            tmp.rename(dest)
        return total
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        remove_tree(tmp)
        raise SandboxError(f"sandbox refused: not a valid archive ({exc})") from exc
    except BaseException:
        remove_tree(tmp)
        raise


def remove_tree(path: Path) -> None:
    """Remove ``path`` even where its folders were made read-only."""
    for dirpath, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o700)
    shutil.rmtree(path, ignore_errors=True)
