"""The datasets of the papers (HER2ST, STNet, cSCC): which sections exist, whose they are, and their folds.

Facts ship with the package (``genedml/data/``): one row per section (HEST id, original section name,
patient, HEST's pixel size), the reference fold memberships of the published code, and the 250-gene lists
of the Gene-DML supplementary (with mistyped symbols corrected; the published spelling is kept beside).
A config names a dataset and a data folder; ``genedml.io.sample_sheet`` builds the sample sheet from these
facts and the folder.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd

from genedml.errors import InputError
from genedml.pipeline import schema

log = logging.getLogger(__name__)

DATASETS = tuple(d for d in schema.choices("dataset") if d)  # the config's `dataset` values
# names the papers, HEST and the reference code use for the same datasets
ALIASES = {
    "her2st": "her2st",
    "andersson": "her2st",
    "stnet": "stnet",
    "bryan": "stnet",
    "cscc": "cscc",
    "skin": "cscc",
    "skinst": "cscc",
    "skin(skinst)": "cscc",
    "andrew": "cscc",
}
GENE_LIST_PREFIX = "genedml:"


def data_path(*parts: str) -> Path:
    """A file shipped in ``genedml/data``."""
    return Path(str(resources.files("genedml").joinpath("data", *parts)))


def canonical(name: str) -> str:
    key = str(name).strip().lower()
    if key not in ALIASES:
        raise InputError(f"unknown dataset {name!r}; genedml knows {', '.join(DATASETS)}")
    return ALIASES[key]


@cache
def _sections() -> pd.DataFrame:
    return pd.read_csv(data_path("sections.tsv"), sep="\t", comment="#", dtype=str)


def sections(dataset: str) -> pd.DataFrame:
    """All sections of a dataset: dataset, hest_id, section, patient, spots_under_tissue, hest_pixel_size_um, ..."""
    table = _sections()
    return table[table["dataset"] == canonical(dataset)].reset_index(drop=True)


def lookup(dataset: str, name: str) -> pd.Series | None:
    """The row of a section given by HEST id (``SPA145``) or section name (``B4``), or None."""
    table = sections(dataset)
    hit = table[(table["hest_id"] == name) | (table["section"] == name)]
    return hit.iloc[0] if len(hit) else None


def reference_folds(dataset: str, reference_set: str, patients: list[str] | None = None) -> pd.DataFrame:
    """Test patients per fold (``fold``, ``test_patients``) of the published code for a dataset.

    ``patients``: the patients of the sample sheet; patients a fold names but the sheet lacks are left out
    (reported), and a fold left with none is dropped, so a partial download still gets the reference split.
    """
    name = canonical(dataset)
    known = schema.choices("folds.reference_set")
    if reference_set not in known:
        raise InputError(f"unknown reference fold set {reference_set!r}; choose one of {', '.join(known)}")
    table = pd.read_csv(data_path("reference_folds.tsv"), sep="\t", comment="#", dtype=str)
    table = table[(table["reference_set"] == reference_set) & (table["dataset"] == name)]
    rows, dropped = [], []
    for r in table.itertuples():
        members = [p for p in r.test_patients.split(",") if p]
        if patients is not None:
            dropped += [p for p in members if p not in patients]
            members = [p for p in members if p in patients]
        if members:
            rows.append({"fold": len(rows), "test_patients": ",".join(members), "reference_fold": int(r.fold)})
    if dropped:
        log.warning(
            "reference folds (%s, %s): patients %s are not in the sample sheet and are left out",
            name,
            reference_set,
            ", ".join(sorted(dropped)),
        )
    if not rows:
        raise InputError(f"none of the reference folds of {name} ({reference_set}) has a patient in the sample sheet")
    return pd.DataFrame(rows)


def gene_list_names() -> list[str]:
    return [f"{GENE_LIST_PREFIX}{d}_250{s}" for d in DATASETS for s in ("", "_published")]


def gene_list_path(value: str) -> Path:
    """Resolve ``genedml:<dataset>_250`` (corrected) / ``genedml:<dataset>_250_published`` to the shipped file;
    any other value is a path."""
    value = str(value)
    if not value.startswith(GENE_LIST_PREFIX):
        return Path(value)
    key = value[len(GENE_LIST_PREFIX) :]
    published = key.endswith("_published")
    key = key[: -len("_published")] if published else key
    dataset, _, n = key.rpartition("_")
    try:
        dataset = canonical(dataset)
    except InputError:
        dataset = ""
    path = data_path("genes", *(["published"] if published else []), f"{dataset}_{n}.txt")
    if not dataset or not path.exists():
        raise InputError(f"no built-in gene list {value!r}; built-in lists: {', '.join(gene_list_names())}")
    return path


def symbol_fixes(dataset: str | None = None) -> pd.DataFrame:
    table = pd.read_csv(data_path("genes", "symbol_fixes.tsv"), sep="\t", comment="#", dtype=str)
    return table if dataset is None else table[table["dataset"] == canonical(dataset)].reset_index(drop=True)
