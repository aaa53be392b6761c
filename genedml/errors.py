"""Errors about a user's input: always name the sample, the file and what is wrong."""

from __future__ import annotations


class InputError(Exception):
    """Bad input data. The message says which sample, which file, and what is wrong."""

    def __init__(self, problem: str, sample: str | None = None, path: object | None = None):
        self.sample = sample
        self.path = None if path is None else str(path)
        self.problem = problem
        parts = []
        if sample is not None:
            parts.append(f"sample {sample!r}")
        if path is not None:
            parts.append(f"file {self.path}")
        where = ", ".join(parts)
        super().__init__(f"{where}: {problem}" if where else problem)
