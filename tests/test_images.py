"""`--ship-image`'s store of saved images: names that stay in their folder, and a bounded number kept.

Saving and loading real images is tested on the cluster (test_fleet_e2e.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from distproc.hosts.images import prune_saved, saved_name

ID = "sha256:" + "ab" * 32


def test_a_saved_image_is_named_by_its_id_and_name_in_hex_only() -> None:
    """The same ID under another name is another tar (the tar tags the name); odd IDs and names stay plain."""
    name = saved_name("prep:1", ID)
    assert name.startswith("ab" * 32 + "-") and name.endswith(".tar")
    assert saved_name("prep:2", ID) != name
    odd = saved_name("../../etc/passwd", "../x")
    assert "/" not in odd and ".." not in odd.removesuffix(".tar")


def _touch(folder: Path, name: str, mtime: float) -> Path:
    path = folder / name
    path.write_bytes(b"tar")
    os.utime(path, (mtime, mtime))
    return path


def test_only_the_most_recently_used_tars_are_kept(tmp_path: Path) -> None:
    """Keep 2: the one just used and the newest other; older tars and day-old unfinished saves go."""
    old, mid, new = (_touch(tmp_path, f"{k}.tar", 1000.0 + k) for k in range(3))
    current = _touch(tmp_path, "current.tar", 500.0)  # just saved, whatever its time says
    stale = _touch(tmp_path, ".x.tar.1-ab.partial", 1000.0)
    running = _touch(tmp_path, ".y.tar.2-cd.partial", 1000.0 + 86000)
    removed = prune_saved(tmp_path, keep=2, current=current, now=1000.0 + 86500)
    assert sorted(removed) == sorted([old, mid, stale])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new.name, current.name, running.name])
