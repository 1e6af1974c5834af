"""`opusclip_track._files`: atomic, durable writes shared by the media encoder and the weights download."""

from __future__ import annotations

from pathlib import Path

import pytest

from opusclip_track._files import atomic_open, atomic_path, atomic_write_bytes


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_creates_the_folder_and_replaces_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "table.json"
    assert atomic_write_bytes(target, b"[1]") == target
    atomic_write_bytes(target, b"[1, 2]")
    assert target.read_bytes() == b"[1, 2]"
    assert _leftovers(target.parent) == []


def test_an_error_inside_the_block_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "weights.pth"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="checksum mismatch"), atomic_open(target) as out:
        out.write(b"half a download")
        raise ValueError("checksum mismatch")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_a_path_for_writers_that_want_a_file_name(tmp_path: Path) -> None:
    target = tmp_path / "clip.mp4"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".clip.mp4.") and not target.exists()
        tmp.write_bytes(b"encoded")
    assert target.read_bytes() == b"encoded"
    assert _leftovers(tmp_path) == []


def test_a_failed_rename_raises_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data")
    assert target.is_dir() and _leftovers(tmp_path) == []
