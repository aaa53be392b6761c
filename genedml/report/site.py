"""The report's folder: index.html and index.md with every figure and table they show beside them, written
atomically, and the same Markdown elsewhere with its links pointing into that folder."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from genedml.atomic import atomic_path, write_text
from genedml.report.render import Document

log = logging.getLogger(__name__)


@dataclass
class SiteFiles:
    """The files the report shows, by their path inside the site folder."""

    copies: dict[str, Path] = field(default_factory=dict)  # a file of the run, linked or copied
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # a table written as TSV

    def add_file(self, rel: str, src: Path) -> None:
        self.copies[rel] = Path(src)

    def add_if_exists(self, rel: str, src: Path) -> bool:
        """Register ``src`` when the run wrote it; say whether it did."""
        if Path(src).exists():
            self.add_file(rel, src)
            return True
        return False

    def add_table(self, rel: str, frame: pd.DataFrame) -> None:
        self.frames[rel] = frame


def write_site(doc: Document, files: SiteFiles, site_dir, md_out) -> None:
    """Write ``site_dir`` (index.html, index.md and ``files``) in one rename; ``md_out``, when set, gets the
    Markdown with links relative to its own folder."""
    markdown = doc.to_markdown()
    with atomic_path(site_dir) as tmp:
        tmp.mkdir(parents=True)
        for rel, src in files.copies.items():
            _link_or_copy(src, tmp / rel)
        for rel, frame in files.frames.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(tmp / rel, sep="\t", index=False)
        (tmp / "index.md").write_text(markdown)
        (tmp / "index.html").write_text(doc.to_html())
    if md_out is not None:
        prefix = os.path.relpath(Path(site_dir), Path(md_out).parent).replace(os.sep, "/") + "/"
        write_text(md_out, doc.to_markdown(prefix=prefix))
    n_figures = sum(rel.startswith("figures/") for rel in files.copies)
    log.info(
        "report: %s (%d figures, %d tables)",
        Path(site_dir) / "index.html",
        n_figures,
        len(files.copies) - n_figures + len(files.frames),
    )


def _link_or_copy(src: Path, dst: Path) -> None:
    # a hard link costs no space; across file systems fall back to a copy
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
