"""Shared by the benchmark scripts (run as ``python benchmarks/<script>.py``, so this folder is on the path)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def report_rows(rows: list[dict], time_column: str, ratio_column: str, out: Path | None) -> pd.DataFrame:
    """Print the rows as a table with ``time_column`` as a ratio to the first row (all measured in this run),
    and save it as TSV when ``out`` is given."""
    table = pd.DataFrame(rows)
    table[ratio_column] = (table[time_column] / table[time_column].iloc[0]).round(2)
    print(table.to_string(index=False))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, sep="\t", index=False)
    return table
