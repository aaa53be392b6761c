"""The datasets of the papers (HER2ST, STNet, cSCC): which sections exist, whose they are, and their folds.

Facts ship with the package (``genedml/data/``): one row per section (HEST id, original section name,
patient, HEST's pixel size), the reference fold memberships of the published code, and the 250-gene lists
of the Gene-DML supplementary (with mistyped symbols corrected; the published spelling is kept beside).
A config names a dataset and a data folder; the sample sheet is built from these facts and the folder.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from genedml.errors import InputError

log = logging.getLogger(__name__)

DATASETS = ("her2st", "stnet", "cscc")
# names the papers, HEST and the reference code use for the same datasets
ALIASES = {
    "her2st": "her2st", "andersson": "her2st",
    "stnet": "stnet", "bryan": "stnet",
    "cscc": "cscc", "skin": "cscc", "skinst": "cscc", "skin(skinst)": "cscc", "andrew": "cscc",
}
REFERENCE_SETS = ("legacy", "triplex2025")
SHEET_COLUMNS = ["sample", "patient", "dataset", "section", "hest_id"]
GENE_LIST_PREFIX = "genedml:"


def data_path(*parts: str) -> Path:
    """A file shipped in ``genedml/data``."""
    return Path(str(resources.files("genedml").joinpath("data", *parts)))


def canonical(name: str) -> str:
    key = str(name).strip().lower()
    if key not in ALIASES:
        raise InputError(f"unknown dataset {name!r}; genedml knows {', '.join(DATASETS)}")
    return ALIASES[key]


@lru_cache(maxsize=None)
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


def sample_sheet(dataset: str, wanted: list[str] | None = None, naming: str = "hest_id",
                 available: set[str] | None = None) -> pd.DataFrame:
    """Sample sheet (sample, patient, dataset, section, hest_id) for sections of a dataset.

    ``wanted``: HEST ids or section names (None = every section). ``naming``: what the sample is called in the
    pipeline: ``hest_id`` (HEST-1k files are named by id) or ``section`` (legacy-ST files are named by section).
    ``available``: names (in that naming) that exist in the data folder; with ``wanted`` None, only those are
    kept; a wanted name that is not available is an error.
    """
    name = canonical(dataset)
    table = sections(name)
    if naming not in ("hest_id", "section"):
        raise ValueError(f"naming must be hest_id or section, got {naming!r}")
    if wanted:
        rows, unknown = [], []
        for w in wanted:
            row = lookup(name, str(w))
            (unknown.append(str(w)) if row is None else rows.append(row))
        if unknown:
            ex = f"{table['hest_id'].iloc[0]}..{table['hest_id'].iloc[-1]} or sections such as {', '.join(table['section'].head(3))}"
            raise InputError(f"dataset {name} has no sample {', '.join(map(repr, unknown))} (known: HEST ids {ex})")
        chosen = pd.DataFrame(rows)
    else:
        chosen = table.sort_values(["patient", "section"], kind="mergesort")
    sheet = pd.DataFrame({
        "sample": chosen[naming].to_numpy(),
        "patient": chosen["patient"].to_numpy(),
        "dataset": name,
        "section": chosen["section"].to_numpy(),
        "hest_id": chosen["hest_id"].to_numpy(),
    })
    dup = sheet["sample"][sheet["sample"].duplicated()].tolist()
    if dup:
        raise InputError(f"samples listed twice: {', '.join(dup)}")
    if available is not None:
        missing = [s for s in sheet["sample"] if s not in available]
        if wanted and missing:
            raise InputError(f"dataset {name}: sample(s) {', '.join(missing)} not found in the data folder")
        sheet = sheet[sheet["sample"].isin(available)]
        if sheet.empty:
            raise InputError(f"no section of dataset {name} was found in the data folder")
    return sheet.reset_index(drop=True)


def hest_samples_present(hest_dir: str | Path) -> set[str]:
    """HEST ids with an expression file in a HEST-1k folder (``st/{id}.h5ad``)."""
    return {p.stem for p in Path(hest_dir).glob("st/*.h5ad")}


def legacy_sections_present(st_dir: str | Path) -> set[str]:
    """Section names with counts, spot file and image in a legacy-ST folder."""
    root = Path(st_dir)
    counts = {p.name[: -len(".tsv.gz")] for p in root.glob("ST-cnts/*.tsv.gz")}
    spots = {p.name[: -len("_selection.tsv")] for p in root.glob("ST-spotfiles/*_selection.tsv")}
    images = {p.parent.name for p in root.glob("ST-imgs/*/*/*.jpg")}
    return counts & spots & images


def reference_folds(dataset: str, reference_set: str = "legacy", patients: list[str] | None = None) -> pd.DataFrame:
    """Test patients per fold (``fold``, ``test_patients``) of the published code for a dataset.

    ``patients``: the patients of the sample sheet; patients a fold names but the sheet lacks are left out
    (reported), and a fold left with none is dropped, so a partial download still gets the reference split.
    """
    name = canonical(dataset)
    if reference_set not in REFERENCE_SETS:
        raise InputError(f"unknown reference fold set {reference_set!r}; choose one of {', '.join(REFERENCE_SETS)}")
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
        log.warning("reference folds (%s, %s): patients %s are not in the sample sheet and are left out",
                    name, reference_set, ", ".join(sorted(dropped)))
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
    key = value[len(GENE_LIST_PREFIX):]
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


def check_sheet_files(sheet: pd.DataFrame, source: str, folder: str | Path) -> None:
    """Fail before anything runs when the sample sheet names a sample that has no data in the folder."""
    folder = Path(folder)
    problems = []
    for row in sheet.itertuples():
        if source == "hest":
            need = [folder / "st" / f"{row.sample}.h5ad", folder / "metadata" / f"{row.sample}.json"]
            missing = [p for p in need if not p.exists()]
            slide = list((folder / "wsis").glob(f"{row.sample}.*"))
            if not slide:
                missing.append(folder / "wsis" / f"{row.sample}.tif")
        else:  # legacy_st
            section = getattr(row, "section", "") or row.sample
            missing = [p for p in (folder / "ST-cnts" / f"{section}.tsv.gz",
                                   folder / "ST-spotfiles" / f"{section}_selection.tsv") if not p.exists()]
            if not list(folder.glob(f"ST-imgs/*/{section}/*.jpg")):
                missing.append(folder / "ST-imgs" / "*" / section / "*.jpg")
        if missing:
            problems.append((row.sample, missing))
    if problems:
        sample, missing = problems[0]
        others = f" (also missing: samples {', '.join(s for s, _ in problems[1:])})" if len(problems) > 1 else ""
        raise InputError(f"the sample sheet names a sample that is not in {folder}: "
                         f"{', '.join(str(p) for p in missing)} not found{others}", sample, missing[0])


def config_sample_sheet(config: dict) -> tuple[pd.DataFrame, str | None]:
    """The run's sample sheet from a config, and the TSV it came from (None when built from the registry).

    ``samples`` is a TSV path (sample, patient, dataset[, section]); or, with ``dataset`` set, a list of HEST ids
    / section names, or null for every section of the dataset present in the data folder. For ``hest`` and
    ``legacy_st`` sources every sample must have its files in the folder, checked here before anything runs.
    """
    from genedml.study.folds import read_sample_sheet

    data = config.get("data", {})
    source = data.get("source", "demo")
    folder = {"hest": data.get("hest_dir"), "legacy_st": data.get("legacy_st_dir")}.get(source)
    if source in ("hest", "legacy_st") and not folder:
        key = "hest_dir" if source == "hest" else "legacy_st_dir"
        raise InputError(f"config data.source is {source!r} but data.{key} is not set")
    samples = config.get("samples")
    if isinstance(samples, str):
        sheet, path = read_sample_sheet(samples), samples
    else:
        if not config.get("dataset"):
            raise InputError("config needs `samples` (a sample sheet TSV), or `dataset` (her2st, stnet, cscc) "
                             "to build the sample sheet from genedml's registry")
        if source == "demo":
            raise InputError("`dataset` builds the sample sheet from real data: set data.source to hest or legacy_st")
        naming = "section" if source == "legacy_st" else "hest_id"
        available = legacy_sections_present(folder) if source == "legacy_st" else hest_samples_present(folder)
        sheet, path = sample_sheet(config["dataset"], list(samples or []) or None, naming, available), None
    if source in ("hest", "legacy_st"):
        check_sheet_files(sheet, source, folder)
    return sheet, path
