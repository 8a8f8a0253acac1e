"""Sandboxes: deterministic packing with exclusions and a size limit; unpacking that refuses escapes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from harness import evil

from pilotwave.errors import SandboxError
from pilotwave.sdk import sandbox


def tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "train.py").write_text("def f():\n    return 1\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    for junk in (".git", ".venv", "__pycache__", "node_modules", "pkg/__pycache__"):
        (root / junk).mkdir(parents=True, exist_ok=True)
        (root / junk / "junk.bin").write_bytes(b"x" * 100)
    (root / "pkg" / "mod.pyc").write_bytes(b"compiled")
    return root


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return sorted(t.getnames())


def test_pack_skips_vcs_environments_and_caches(tmp_path: Path) -> None:
    box = sandbox.pack(tree(tmp_path / "src"))
    assert names(box.data) == ["pkg/__init__.py", "pkg/train.py", "run.sh"]
    assert box.files == 3


def test_same_tree_packs_to_the_same_hash(tmp_path: Path) -> None:
    a = sandbox.pack(tree(tmp_path / "a"))
    b_root = tree(tmp_path / "b")
    (b_root / "pkg" / "train.py").touch()  # mtimes do not matter
    assert sandbox.pack(b_root).sha256 == a.sha256
    (b_root / "pkg" / "train.py").write_text("changed")
    assert sandbox.pack(b_root).sha256 != a.sha256


def test_oversize_tree_is_refused_naming_the_largest_files(tmp_path: Path) -> None:
    root = tree(tmp_path / "src")
    (root / "data.h5").write_bytes(b"\0" * 3000)
    with pytest.raises(SandboxError, match=r"data\.h5"):
        sandbox.pack(root, limit=2000)


def test_roundtrip_keeps_files_and_modes(tmp_path: Path) -> None:
    box = sandbox.pack(tree(tmp_path / "src"))
    sandbox.unpack(box.data, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "train.py").read_text().startswith("def f")
    assert (tmp_path / "out" / "run.sh").stat().st_mode & 0o111


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path: Path, kind: str) -> None:
    dest = tmp_path / "box" / "sha"
    dest.parent.mkdir()
    with pytest.raises(SandboxError, match="sandbox refused"):
        sandbox.unpack(evil(kind), dest)
    assert not dest.exists()
    assert not (tmp_path / "box" / "escaped.txt").exists()
    assert not Path("/tmp/pilotwave-absolute-escape.txt").exists()
    assert list(dest.parent.iterdir()) == []


def test_garbage_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="not a valid archive"):
        sandbox.unpack(b"definitely not a tarball", tmp_path / "x")


def test_pilotwave_state_inside_the_project_is_not_packed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flow.py").write_text("x = 1\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "pilotwave.db").write_bytes(b"\0" * 1000)
    monkeypatch.setenv("PILOTWAVE_HOME", str(tmp_path / "state"))
    with tarfile.open(fileobj=io.BytesIO(sandbox.pack(tmp_path).data)) as tar:
        assert tar.getnames() == ["flow.py"]


def _archive(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("files", "limits", "match"),
    [
        # 150 kB of gzip that unpacks to 151 MB: over the expansion ratio.
        ({"zeros.bin": bytes(151 * 1024 * 1024)}, sandbox.UnpackLimits(), "unpack to more than"),
        ({"a.bin": bytes(2000)}, sandbox.UnpackLimits(max_bytes=1000, ratio_floor=0), "1000 bytes"),
        (
            {f"f{i}": b"" for i in range(20)},
            sandbox.UnpackLimits(max_files=10),
            "more than 10 files",
        ),
    ],
)
def test_sandbox_bombs_are_refused_while_streaming_and_leave_nothing(
    tmp_path: Path, files: dict[str, bytes], limits: sandbox.UnpackLimits, match: str
) -> None:
    data = _archive(files)
    dest = tmp_path / "box" / "sha"
    dest.parent.mkdir()
    with pytest.raises(SandboxError, match=match):
        sandbox.unpack(data, dest, limits)
    assert list(dest.parent.iterdir()) == []


def test_a_pilots_cache_is_read_only_checked_before_each_job_and_capped(tmp_path: Path) -> None:
    import hashlib

    from pilotwave.pilot.sandboxes import SandboxCache

    blobs = {}
    for n in range(3):
        data = _archive({"code.py": f"x = {n}\n".encode() + bytes(1000 * n)})
        blobs[hashlib.sha256(data).hexdigest()] = data
    fetched: list[str] = []

    def fetch(sha: str) -> bytes:
        fetched.append(sha)
        return blobs[sha]

    evicted: list[Path] = []
    cache = SandboxCache(tmp_path / "cache", fetch, max_bytes=2500, on_evict=evicted.append)
    a, b, c = blobs
    box = cache.acquire(a)
    assert (box / "code.py").stat().st_mode & 0o222 == 0 and box.stat().st_mode & 0o222 == 0
    cache.release(box)
    assert cache.acquire(a) == box and fetched == [a]  # cached
    cache.release(box)

    # A job (running as root here, so permissions do not stop it) changes the sandbox: the
    # next job gets a fresh copy, not the changed one.
    (box / "code.py").chmod(0o644)
    (box / "code.py").write_text("x = 'planted'\n")
    fresh = cache.acquire(a)
    assert fresh != box and (fresh / "code.py").read_text() == "x = 0\n" and not box.exists()
    cache.release(fresh)
    # A new file counts as a change too (a planted __pycache__ would run in the next job).
    fresh.chmod(0o755)
    (fresh / "__pycache__").mkdir()
    fresh.chmod(0o555)
    again = cache.acquire(a)
    assert again != fresh and not (again / "__pycache__").exists()

    # Over the cap, the least recently used sandbox no job holds goes; a held one stays.
    held = cache.acquire(b)  # 1000 bytes more
    cache.acquire(c)  # 2000 more: over the cap of 2500, but every sandbox is held
    assert again.exists() and held.exists()
    cache.release(again)  # unused now: evicted, the least recently used first
    assert not again.exists() and again in evicted and held.exists()
    cache.release(held)  # still over the cap: this one goes too
    assert not held.exists() and evicted[-1] == held
    cache.close()
    assert not cache.dir.exists()


def test_cache_folders_of_dead_pilots_are_removed(tmp_path: Path) -> None:
    from pilotwave.pilot.sandboxes import SandboxCache

    stale = tmp_path / "cache" / "p999999999"
    (stale / "box").mkdir(parents=True)
    (stale / "box").chmod(0o555)
    cache = SandboxCache(tmp_path / "cache", lambda sha: b"")
    assert not stale.exists() and cache.dir.exists()
    cache.close()
