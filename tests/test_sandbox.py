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
