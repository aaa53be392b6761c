"""Cross-validation folds from a sample sheet, grouped by patient so no patient is in train and test.

Schemes:
- ``leave_one_patient_out``: one fold per patient (HER2ST, skinST in the papers).
- ``group_kfold``: ``n_folds`` folds over patients; with a seed, sklearn's ``KFold(n, shuffle=True,
  random_state=seed)`` over the sorted patient list. This does NOT reproduce the reference STNet folds
  (the authors' KFold ran over a patient list in another, unsorted order): use ``reference`` for those.
- ``leave_one_sample_out``: one fold per section (only for within-patient studies; says so in the report).
- ``table``: explicit folds from a TSV: ``fold`` and either ``test_patients`` or ``test_samples``
  (comma-separated); optional ``train_samples`` (default: every other sample; samples in neither list sit
  the fold out) and ``design`` (a label carried into the fold table, so one run can hold several designs,
  e.g. within-patient and cross-patient folds).
- ``reference``: the published code's fold membership for the sample sheet's dataset (HER2ST / cSCC
  leave-one-patient-out, STNet's KFold(8, shuffle, 2021) membership as the code ran it, or the 2025
  TRIPLEX refactor's), shipped in ``genedml/data/reference_folds.tsv``; see ``resolve_fold_table``.
Within each fold an inner validation set is drawn from the training patients (``val_patients`` of them,
rotating deterministically); it drives model selection. With a single training patient, one of its
sections is used instead; with a single training section there is no validation set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from genedml.errors import InputError
from genedml.io.datasets import reference_folds
from genedml.pipeline import schema
from genedml.pipeline.spec import StageSpec
from genedml.study.genes import text_encoding

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldSpec(StageSpec):
    """How the cross-validation folds are drawn (config ``folds``; defaults in the config schema)."""

    section: ClassVar[str] = "folds"

    scheme: str
    reference_set: str  # scheme reference: whose published folds
    n_folds: int  # group_kfold
    seed: int | None  # group_kfold shuffle seed (None: no shuffle)
    val_patients: int  # inner validation patients per fold
    table: str | None  # scheme table: the TSV


def kfold_test_indices(n: int, n_folds: int, seed: int | None) -> list[np.ndarray]:
    """The test indices of each of ``n_folds`` folds over ``n`` items, the folds scikit-learn's
    ``KFold(n_folds, shuffle=seed is not None, random_state=seed)`` draws (so published fold assignments
    stay the same), without importing scikit-learn while Snakemake plans: contiguous runs of the (shuffled)
    order, the first ``n % n_folds`` folds one item longer."""
    order = np.arange(n)
    if seed is not None:
        np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    ends = np.cumsum(sizes)
    return [np.sort(order[end - size : end]) for size, end in zip(sizes, ends)]  # sorted, as KFold.split


def _test_patient_groups(
    patients: list[str], samples: pd.DataFrame, scheme: str, n_folds: int, seed: int | None, table: pd.DataFrame | None
) -> list[list[str]]:
    if scheme == "leave_one_patient_out":
        return [[p] for p in patients]
    if scheme == "group_kfold":
        if n_folds < 2 or n_folds > len(patients):
            raise InputError(f"group_kfold needs 2 <= n_folds <= number of patients ({len(patients)}), got {n_folds}")
        arr = np.array(patients)
        return [sorted(arr[test].tolist()) for test in kfold_test_indices(len(arr), n_folds, seed)]
    if scheme == "table":
        if table is None:
            raise InputError("folds.scheme 'table' needs folds.table (a TSV with fold, test_patients)")
        groups = []
        for _, row in table.sort_values("fold").iterrows():
            groups.append([p.strip() for p in str(row["test_patients"]).split(",") if p.strip()])
        unknown = sorted({p for g in groups for p in g} - set(patients))
        if unknown:
            raise InputError(f"fold table names patients not in the sample sheet: {', '.join(unknown)}")
        return groups
    raise InputError(f"unknown folds.scheme {scheme!r}; choose one of {', '.join(schema.choices('folds.scheme'))}")


def make_folds(sheet: pd.DataFrame, spec: FoldSpec, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return a long table: fold, sample, patient, split (train | val | test). ``table``: the fold table of
    scheme ``table`` (``resolve_fold_table`` reads it, or turns scheme ``reference`` into one)."""
    scheme, n_folds, seed, val_patients = spec.scheme, spec.n_folds, spec.seed, spec.val_patients
    sheet = sheet.copy()
    patients = sorted(sheet["patient"].unique())
    patient_of = dict(zip(sheet["sample"], sheet["patient"]))
    all_samples = sorted(sheet["sample"])
    samples_of = {p: sorted(g) for p, g in sheet.groupby("patient")["sample"]}
    train_sets, designs = None, None
    if scheme == "reference":
        raise InputError("folds.scheme 'reference' must be resolved to a fold table first (folds.resolve_fold_table)")
    if scheme == "leave_one_sample_out":
        test_sets = [[s] for s in sorted(sheet["sample"])]
    elif scheme == "table" and table is not None and "test_samples" in table.columns:
        test_sets, train_sets, designs = _sample_table(sheet, table)
    else:
        test_sets = [
            [s for p in g for s in samples_of[p]]
            for g in _test_patient_groups(patients, sheet, scheme, n_folds, seed, table)
        ]
        if scheme == "table" and table is not None and "design" in table.columns:
            designs = table.sort_values("fold")["design"].fillna("").astype(str).tolist()
    rows = []
    for k, test in enumerate(test_sets):
        held_out = set(test)
        train_samples = [s for s in all_samples if s not in held_out]
        if train_sets is not None and train_sets[k] is not None:
            keep = set(train_sets[k])
            train_samples = [s for s in train_samples if s in keep]
        if scheme == "leave_one_sample_out":
            # training sections of the test section's patient stay in training: within-patient scheme
            pass
        train_patients = sorted({patient_of[s] for s in train_samples})
        val: list[str] = []
        if val_patients > 0 and len(train_patients) > val_patients:
            chosen = [train_patients[(k + i) % len(train_patients)] for i in range(val_patients)]
            val = [s for p in chosen for s in samples_of[p] if s in set(train_samples)]
        elif val_patients > 1:
            # asked for more validation patients than the fold can spare: never shrink the request silently
            raise InputError(
                f"folds.val_patients is {val_patients} but fold {k} has {len(train_patients)} training patient(s) "
                f"({', '.join(train_patients)}), and at least one must stay for training: set folds.val_patients "
                f"to at most {max(len(train_patients) - 1, 0)} (0: no inner validation)"
            )
        elif val_patients == 1 and len(train_samples) > 1:
            # one training patient: validate on one of its sections (within-patient, stated in the log)
            val = [train_samples[k % len(train_samples)]]
            log.warning(
                "fold %d has one training patient (%s): its inner validation is one of that patient's sections (%s), "
                "not another patient",
                k,
                train_patients[0],
                val[0],
            )
        in_test, in_train, in_val = set(test), set(train_samples), set(val)  # sets: planning stays linear
        for s in all_samples:
            if s not in in_test and s not in in_train:
                continue  # sits this fold out (fold table with train_samples)
            split = "test" if s in in_test else "val" if s in in_val else "train"
            row = {"fold": k, "sample": s, "patient": patient_of[s], "split": split}
            if designs is not None:
                row["design"] = designs[k]
            rows.append(row)
    folds = pd.DataFrame(rows)
    for k, grp in folds.groupby("fold"):
        if not (grp["split"] == "train").any():
            raise InputError(f"fold {k} has no training samples (too few patients for scheme {scheme!r})")
    return folds


def _split_list(value) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip() and str(value) != "nan"]


def _sample_table(sheet: pd.DataFrame, table: pd.DataFrame):
    """Test / train sample lists and design labels of a fold table given by samples."""
    known = set(sheet["sample"])
    tests, trains, designs = [], [], []
    for _, row in table.sort_values("fold").iterrows():
        test = _split_list(row["test_samples"])
        train = _split_list(row["train_samples"]) if "train_samples" in table.columns else []
        unknown = sorted((set(test) | set(train)) - known)
        if unknown:
            raise InputError(f"fold table names samples not in the sample sheet: {', '.join(unknown)}")
        if not test:
            raise InputError(f"fold {row['fold']} of the fold table has no test samples")
        both = sorted(set(test) & set(train))
        if both:
            raise InputError(f"fold {row['fold']}: samples both in train and test: {', '.join(both)}")
        tests.append(test)
        trains.append(train or None)
        designs.append(str(row["design"]) if "design" in table.columns and not pd.isna(row["design"]) else "")
    return tests, trains, designs if "design" in table.columns else None


def sheet_dataset(sheet: pd.DataFrame) -> str:
    values = sorted({v for v in sheet["dataset"].astype(str) if v})
    if len(values) != 1:
        raise InputError(
            f"folds.scheme 'reference' needs one dataset in the sample sheet, found {values or 'none'}; "
            "set `dataset` in the config"
        )
    return values[0]


def resolve_fold_table(
    spec: FoldSpec, sheet: pd.DataFrame, dataset: str | None = None
) -> tuple[FoldSpec, pd.DataFrame | None]:
    """(spec, fold table) ready for ``make_folds``: reads the spec's ``table``; turns scheme ``reference``
    into the shipped reference membership of ``dataset`` (or the sheet's single dataset), restricted to the
    sheet's patients, as a scheme ``table``."""
    if spec.scheme == "reference":
        dataset = dataset or sheet_dataset(sheet)
        patients = sorted(sheet["patient"].unique())
        return replace(spec, scheme="table"), reference_folds(dataset, spec.reference_set, patients)
    if not spec.table:
        return spec, None
    path = Path(spec.table)
    if not path.exists():
        raise InputError("fold table not found", None, path)
    table = pd.read_csv(path, sep="\t", dtype=str, comment="#", encoding=text_encoding(path))
    if "fold" not in table.columns or not ({"test_patients", "test_samples"} & set(table.columns)):
        raise InputError("fold table needs columns fold and test_patients or test_samples", None, path)
    table["fold"] = table["fold"].astype(int)
    return spec, table


def plan_folds(sheet: pd.DataFrame, spec: FoldSpec, dataset: str | None = None) -> pd.DataFrame:
    """The fold table of a run: ``resolve_fold_table`` then ``make_folds``."""
    resolved, table = resolve_fold_table(spec, sheet, dataset)
    return make_folds(sheet, resolved, table)


def read_folds(path: str | Path) -> pd.DataFrame:
    dtype = {"sample": str, "patient": str, "split": str, "fold": int}
    return pd.read_csv(path, sep="\t", dtype=dtype, encoding=text_encoding(path))
