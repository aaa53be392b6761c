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


class NonFiniteError(InputError):
    """A matrix that must be finite (a head's predictions, the targets) holds NaN or inf.

    Names the head, the fold, the section (sample), the file and what is non-finite where."""

    def __init__(
        self,
        what: str,
        sample: str,
        path: object,
        head: str | None = None,
        fold: int | None = None,
        n_nan: int = 0,
        n_inf: int = 0,
        spots: tuple[int, int] = (0, 0),
        genes: tuple[int, int] = (0, 0),
        more: str = "",
    ):
        self.what, self.head, self.fold = what, head, fold
        self.n_nan, self.n_inf, self.spots, self.genes = n_nan, n_inf, spots, genes
        owner = ", ".join(
            p for p in (f"head {head!r}" if head is not None else "", f"fold {fold}" if fold is not None else "") if p
        )
        problem = (
            f"{owner + ': ' if owner else ''}{what} holds {n_nan + n_inf} non-finite value(s) "
            f"({n_nan} NaN, {n_inf} inf) in {spots[0]} of {spots[1]} spots and {genes[0]} of {genes[1]} genes"
            f"{more}"
        )
        super().__init__(problem, sample, path)
