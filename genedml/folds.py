"""Cross-validation folds from a sample sheet, grouped by patient so no patient is in train and test.

Schemes:
- ``leave_one_patient_out``: one fold per patient (HER2ST, skinST in the papers).
- ``group_kfold``: ``n_folds`` folds over patients; with a seed, sklearn's ``KFold(n, shuffle=True,
  random_state=seed)`` over the sorted patient list, which is how the reference code splits STNet.
- ``leave_one_sample_out``: one fold per section (only for within-patient studies; says so in the report).
- ``table``: explicit test patients per fold from a TSV (``fold``, ``test_patients`` comma-separated),
  e.g. the reference memberships in ``folds_reference.tsv`` (filter with ``table_scheme`` / ``table_dataset``).
Within each fold an inner validation set is drawn from the training patients (``val_patients`` of them,
rotating deterministically); it drives model selection. With a single training patient, one of its
sections is used instead; with a single training section there is no validation set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

SCHEMES = ("leave_one_patient_out", "group_kfold", "leave_one_sample_out", "table")
SHEET_COLUMNS = ("sample", "patient", "dataset")


def read_sample_sheet(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError("sample sheet not found", None, path)
    sheet = pd.read_csv(path, sep="\t", dtype=str, comment="#").fillna("")
    missing = [c for c in SHEET_COLUMNS if c not in sheet.columns]
    if missing:
        raise InputError(f"sample sheet lacks column(s) {', '.join(missing)} (needs sample, patient, dataset)", None, path)
    dup = sheet["sample"][sheet["sample"].duplicated()].tolist()
    if dup:
        raise InputError(f"sample sheet lists samples twice: {', '.join(dup)}", None, path)
    empty = sheet.index[(sheet["sample"] == "") | (sheet["patient"] == "")].tolist()
    if empty:
        raise InputError(f"sample sheet rows {', '.join(str(i + 2) for i in empty)} have no sample or patient", None, path)
    return sheet


def _test_patient_groups(patients: list[str], samples: pd.DataFrame, scheme: str, n_folds: int,
                         seed: int | None, table: pd.DataFrame | None) -> list[list[str]]:
    if scheme == "leave_one_patient_out":
        return [[p] for p in patients]
    if scheme == "group_kfold":
        if n_folds < 2 or n_folds > len(patients):
            raise InputError(f"group_kfold needs 2 <= n_folds <= number of patients ({len(patients)}), got {n_folds}")
        from sklearn.model_selection import KFold

        kf = KFold(n_folds, shuffle=seed is not None, random_state=seed)
        arr = np.array(patients)
        return [sorted(arr[test].tolist()) for _, test in kf.split(arr)]
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
    raise InputError(f"unknown folds.scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def make_folds(sheet: pd.DataFrame, scheme: str = "leave_one_patient_out", n_folds: int = 0,
               seed: int | None = 2021, val_patients: int = 1, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return a long table: fold, sample, patient, split (train | val | test)."""
    sheet = sheet.copy()
    patients = sorted(sheet["patient"].unique())
    samples_of = {p: sorted(sheet.loc[sheet["patient"] == p, "sample"]) for p in patients}
    if scheme == "leave_one_sample_out":
        test_sets = [[s] for s in sorted(sheet["sample"])]
    else:
        test_sets = [[s for p in g for s in samples_of[p]] for g in _test_patient_groups(patients, sheet, scheme, n_folds, seed, table)]
    rows = []
    for k, test in enumerate(test_sets):
        train_samples = [s for s in sorted(sheet["sample"]) if s not in test]
        if scheme == "leave_one_sample_out":
            # training sections of the test section's patient stay in training: within-patient scheme
            pass
        train_patients = sorted({sheet.loc[sheet["sample"] == s, "patient"].iloc[0] for s in train_samples})
        val: list[str] = []
        if val_patients > 0 and len(train_patients) > val_patients:
            chosen = [train_patients[(k + i) % len(train_patients)] for i in range(val_patients)]
            val = [s for p in chosen for s in samples_of[p] if s in train_samples]
        elif val_patients > 0 and len(train_samples) > 1:
            val = [train_samples[k % len(train_samples)]]
        for s in sorted(sheet["sample"]):
            split = "test" if s in test else "val" if s in val else "train"
            rows.append({"fold": k, "sample": s, "patient": sheet.loc[sheet["sample"] == s, "patient"].iloc[0], "split": split})
    folds = pd.DataFrame(rows)
    for k, grp in folds.groupby("fold"):
        if not (grp["split"] == "train").any():
            raise InputError(f"fold {k} has no training samples (too few patients for scheme {scheme!r})")
    return folds


def read_folds(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"sample": str, "patient": str, "split": str, "fold": int})
