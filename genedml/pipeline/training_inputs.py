"""The index of every cross-validation section's training inputs: one TSV the train jobs read.

Every train job (one per head and fold) reads the features and targets of many sections. Listing them as
inputs of each train job makes Snakemake match heads x folds x samples files while it plans (and the
command line list every sample): at HEST-1k scale that dominated `snakemake -n` (docs/benchmarks.md,
"Planning a HEST-1k run"). Rule ``training_inputs`` takes them once and writes this index; a train job
depends on the index alone, so a re-embedded section still retrains every head (the index is rewritten),
and the job reads each section's paths from it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from genedml.atomic import write_tsv
from genedml.errors import InputError

KINDS = ("features", "targets")  # the columns beside `sample`, each a path pattern with {sample}


def write_training_inputs(samples: list[str], patterns: dict[str, str], out: str | os.PathLike) -> pd.DataFrame:
    """One row per sample: its path of each kind (``patterns[kind]`` with ``{sample}`` filled in). Every path
    must exist: the index is written after the files it names."""
    unknown = sorted(set(patterns) - set(KINDS))
    if unknown or not patterns:
        raise ValueError(f"unknown or no input kind(s) {unknown}: choose from {', '.join(KINDS)}")
    if not samples:
        raise InputError("no samples to index (the sample sheet is empty)", None, out)
    table = pd.DataFrame({"sample": samples})
    for kind, pattern in patterns.items():
        if "{sample}" not in pattern:
            raise ValueError(f"the {kind} pattern {pattern!r} has no {{sample}}")
        table[kind] = [pattern.replace("{sample}", s) for s in samples]
        missing = [p for p in table[kind] if not Path(p).exists()]
        if missing:
            raise InputError(
                f"{len(missing)} {kind} path(s) do not exist (first: {missing[0]}); run their stage first", None, out
            )
    write_tsv(out, table)
    return table


def read_training_inputs(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``{kind: {sample: path}}`` from an index ``write_training_inputs`` wrote."""
    path = Path(path)
    if not path.exists():
        raise InputError("training-inputs index not found (rule training_inputs writes it)", None, path)
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "sample" not in table.columns or not set(KINDS) & set(table.columns):
        raise InputError(
            f"not a training-inputs index: columns {list(table.columns)}, expected sample and {', '.join(KINDS)}",
            None,
            path,
        )
    return {kind: dict(zip(table["sample"], table[kind])) for kind in KINDS if kind in table.columns}
