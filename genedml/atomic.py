"""Write outputs under a temporary name and rename them into place only when complete.

A crash, a kill or an exception leaves no file that looks finished: the temporary file or folder is
removed on error, and an interrupted process leaves only a ``.tmp-*`` name that nothing reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def remove_path(path: Path) -> None:
    """Remove a file, link or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` to ``final``; an existing ``final`` is moved aside first and then removed,
    so at every moment ``final`` is either the old complete output or the new one."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        remove_path(old)
    else:
        os.replace(tmp, final)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to ``final`` (file or folder).

    With ``overwrite=False`` an existing ``final`` is an error, so nothing a user made is replaced.
    The suffix is kept (``x.tmp-ab12.zarr``) so that libraries choosing a format by suffix still work.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; refusing to overwrite it")
    suffix = "".join(final.suffixes[-1:])
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    tmp = final.with_name(f".{stem}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temporary path for {final}")
        move_into_place(tmp, final)
    except BaseException:
        remove_path(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_tsv(path: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as TSV (no index) atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
