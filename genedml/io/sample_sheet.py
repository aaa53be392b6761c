"""The sample sheet: which sections a run uses, whose they are, and which dataset they belong to.

A sheet is a TSV with columns ``sample``, ``patient``, ``dataset`` (optionally ``section`` and ``hest_id``).
It is given as a file, or built from genedml's dataset registry (``genedml.io.datasets``) for a dataset
and the samples present in a data folder. Every sample must have its files before anything runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from genedml.errors import InputError
from genedml.io.datasets import canonical, lookup, sections
from genedml.io.hest import SamplePaths

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("sample", "patient", "dataset")


def read_sample_sheet(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError("sample sheet not found", None, path)
    sheet = pd.read_csv(path, sep="\t", dtype=str, comment="#").fillna("")
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise InputError(
            f"sample sheet lacks column(s) {', '.join(missing)} (needs sample, patient, dataset)", None, path
        )
    dup = sheet["sample"][sheet["sample"].duplicated()].tolist()
    if dup:
        raise InputError(f"sample sheet lists samples twice: {', '.join(dup)}", None, path)
    empty = sheet.index[(sheet["sample"] == "") | (sheet["patient"] == "")].tolist()
    if empty:
        raise InputError(
            f"sample sheet rows {', '.join(str(i + 2) for i in empty)} have no sample or patient", None, path
        )
    check_sheet_values(sheet, path)
    return sheet


def column_patterns() -> dict[str, str]:
    """The sample-sheet schema's pattern of each column that has one (workflow/schemas/samples.schema.yaml),
    without its anchors: also the `sample` wildcard's constraint in the workflow."""
    import yaml

    from genedml.pipeline.schema import SCHEMA_PATH

    columns = yaml.safe_load((SCHEMA_PATH.parent / "samples.schema.yaml").read_text())["properties"]
    return {c: rule["pattern"].removeprefix("^").removesuffix("$") for c, rule in columns.items() if "pattern" in rule}


def check_sheet_values(sheet: pd.DataFrame, path=None) -> None:
    """Every column the sample-sheet schema (workflow/schemas/samples.schema.yaml) gives a pattern matches it,
    checked for the whole sheet at once (a value reaches file names and command lines)."""
    import re

    for column, pattern in column_patterns().items():
        if column not in sheet.columns:
            continue
        values = sheet[column].fillna("").astype(str)
        bad = values[~values.str.fullmatch(pattern, flags=re.UNICODE)]
        if len(bad):
            rows = ", ".join(f"row {i + 2} {v!r}" for i, v in bad.head(5).items())
            raise InputError(
                f"sample sheet column {column!r} has values that are not allowed ({rows}): "
                "use letters, digits, space and . _ + - only",
                None,
                path,
            )


def registry_sheet(
    dataset: str, wanted: list[str] | None, naming: str, available: set[str] | None = None
) -> pd.DataFrame:
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
    sheet = pd.DataFrame(
        {
            "sample": chosen[naming].to_numpy(),
            "patient": chosen["patient"].to_numpy(),
            "dataset": name,
            "section": chosen["section"].to_numpy(),
            "hest_id": chosen["hest_id"].to_numpy(),
        }
    )
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


def samples_present(source: str, folder: str | Path) -> set[str]:
    """Samples with data in a folder, named as the pipeline names them for that source."""
    return legacy_sections_present(folder) if source == "legacy_st" else hest_samples_present(folder)


def sample_naming(source: str) -> str:
    """What a sample is called: legacy-ST files are named by section, HEST-1k files by HEST id."""
    return "section" if source == "legacy_st" else "hest_id"


def check_sheet_files(sheet: pd.DataFrame, source: str, folder: str | Path) -> None:
    """Fail before anything runs when the sample sheet names a sample that has no data in the folder."""
    folder = Path(folder)
    problems = []
    for row in sheet.itertuples():
        if source == "hest":
            paths = SamplePaths.in_hest_dir(folder, row.sample)
            missing = [p for p in (paths.st, paths.metadata, paths.slide) if not p.exists()]
        else:  # legacy_st
            section = getattr(row, "section", "") or row.sample
            missing = [
                p
                for p in (
                    folder / "ST-cnts" / f"{section}.tsv.gz",
                    folder / "ST-spotfiles" / f"{section}_selection.tsv",
                )
                if not p.exists()
            ]
            if not list(folder.glob(f"ST-imgs/*/{section}/*.jpg")):
                missing.append(folder / "ST-imgs" / "*" / section / "*.jpg")
        if missing:
            problems.append((row.sample, missing))
    if problems:
        sample, missing = problems[0]
        others = f" (also missing: samples {', '.join(s for s, _ in problems[1:])})" if len(problems) > 1 else ""
        raise InputError(
            f"the sample sheet names a sample that is not in {folder}: "
            f"{', '.join(str(p) for p in missing)} not found{others}",
            sample,
            missing[0],
        )


def run_sheet(samples, dataset: str | None, source: str, folder: str | None) -> tuple[pd.DataFrame, str | None]:
    """The run's sample sheet and the TSV it came from (None when built from the registry).

    ``samples`` (config ``samples``) is a TSV path (sample, patient, dataset[, section]); or, with ``dataset``
    set, a list of HEST ids / section names, or null for every section of the dataset present in the data
    folder. For ``hest`` and ``legacy_st`` sources every sample must have its files in ``folder``, checked here
    before anything runs.
    """
    if isinstance(samples, str):
        sheet, path = read_sample_sheet(samples), samples
    else:
        if not dataset:
            raise InputError(
                "config needs `samples` (a sample sheet TSV), or `dataset` (her2st, stnet, cscc) "
                "to build the sample sheet from genedml's registry"
            )
        if source == "demo":
            raise InputError("`dataset` builds the sample sheet from real data: set data.source to hest or legacy_st")
        sheet = registry_sheet(
            dataset, list(samples or []) or None, sample_naming(source), samples_present(source, folder)
        )
        path = None
        check_sheet_values(sheet)
    if source in ("hest", "legacy_st"):
        check_sheet_files(sheet, source, folder)
    if source == "spaceranger":
        check_spaceranger_sheet(sheet, path)
    return sheet, path


def check_spaceranger_sheet(sheet: pd.DataFrame, path) -> None:
    """Fail before anything runs when a Space Ranger sample lacks its outs/ folder or its image."""
    missing = [c for c in ("spaceranger", "image") if c not in sheet.columns]
    if missing:
        raise InputError(
            f"data.source spaceranger needs sample-sheet column(s) {', '.join(missing)} (the outs/ folder of "
            "`spaceranger count` and the full-resolution image of each sample)",
            None,
            path,
        )
    problems = [
        f"{row.sample}: {what} {value or '(empty)'}"
        for row in sheet.itertuples()
        for what, value, ok in (
            ("outs/ folder", row.spaceranger, row.spaceranger and Path(row.spaceranger).is_dir()),
            ("image", row.image, row.image and Path(row.image).is_file()),
        )
        if not ok
    ]
    if problems:
        raise InputError(f"Space Ranger files not found: {'; '.join(problems)}", None, path)
