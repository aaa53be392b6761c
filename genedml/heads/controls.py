"""Control heads: the floors a head's number is read against.

``mean`` (``MeanHead``): every spot of a section gets, per gene, the mean of the training spots' targets.
It knows nothing of the image, so any head must beat it on error; its prediction is constant within a
section, so its per-section PCC is undefined (NaN) by construction.

The shuffled-feature null is not a head of its own: ``shuffled_sections`` permutes the feature rows of
each section across its spots (seeded), which breaks the link between a spot's image and its expression
while keeping every section's feature distribution, its targets and its spot positions. A head that
trains on the permuted copies (ridge's ``shuffle_features: true``) and predicts from the real features
of the held-out section shows how much skill comes from anything but the image at the spot.

A fold's mean model is saved as ``model.npz`` (the per-gene mean; loaded with ``allow_pickle=False``)
and ``model.json`` (format, settings, sizes).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from genedml.errors import InputError
from genedml.heads.base import Head, Section, read_array_model
from genedml.tiles.features import SampleFeatures

MEAN_ARRAYS, MEAN_FACTS = "model.npz", "model.json"
MEAN_FORMAT = "genedml-mean-1"


# --------------------------------------------------------------------------------- shuffled-feature null


def permuted_features(features: SampleFeatures, order: np.ndarray) -> SampleFeatures:
    """A copy of ``features`` whose image-derived per-spot rows are taken in ``order`` (a permutation of
    the spots): the local embedding, its dihedral views, the neighbour tiles and their mask, the token-map
    rows and the spot images move together, while barcodes, pixel positions and array coordinates stay with
    the spots (and so with their targets). Lazy neighbours and token maps stay lazy: ``subset`` maps rows,
    nothing is read."""
    order = np.asarray(order, dtype=np.int64)
    if sorted(order.tolist()) != list(range(features.n_spots)):
        raise ValueError(f"not a permutation of the {features.n_spots} spots of {features.sample}")
    moved = features.subset(order)
    return dataclasses.replace(
        moved, barcodes=features.barcodes, spatial=features.spatial, array_coords=features.array_coords
    )


def shuffled_sections(sections: list[Section], seed: int) -> list[Section]:
    """Copies of ``sections`` with each section's feature rows permuted across its own spots (never between
    sections), by one ``numpy.random.Generator`` seeded with ``seed`` drawn over the sections in order:
    the same sections and seed give the same permutations. Targets, genes and positions are unchanged."""
    rng = np.random.default_rng(int(seed))
    out = []
    for s in sections:
        order = rng.permutation(s.n_spots)
        out.append(dataclasses.replace(s, features=permuted_features(s.features, order)))
    return out


# --------------------------------------------------------------------------------------------- mean head


class MeanHead(Head):
    """Predicts the training spots' per-gene mean for every spot (no settings of its own)."""

    kind = "mean"
    defaults: dict = {}

    def fit(self, train: list[Section], val: list[Section]) -> dict:
        sections = list(train)
        if val and self.params["protocol"] == "honest":  # as ridge's refit; under reference val is the TEST fold
            sections += list(val)
        targets = [np.asarray(s.targets, dtype=np.float64) for s in sections if s.targets is not None]
        if not targets or not sum(len(t) for t in targets):
            raise ValueError("the mean head needs training spots with targets")
        y = np.concatenate(targets)
        self.mean = y.mean(0)
        return {"n_train_spots": int(len(y)), "sections": [s.sample for s in sections]}

    def predict(self, section: Section) -> np.ndarray:
        return np.repeat(self.mean[None, :], section.n_spots, axis=0).astype(np.float32)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        with open(directory / MEAN_ARRAYS, "wb") as fh:  # a file object: np.savez adds no suffix
            np.savez(fh, mean=np.asarray(self.mean, dtype=np.float64))
        facts = {"format": MEAN_FORMAT, "params": self.params, "seed": self.seed, "n_outputs": int(len(self.mean))}
        (directory / MEAN_FACTS).write_text(json.dumps(facts, indent=2, sort_keys=True, default=str))

    @classmethod
    def load(cls, directory: Path, params: dict | None = None) -> MeanHead:
        directory = Path(directory)
        arrays_path = directory / MEAN_ARRAYS
        facts, arrays = read_array_model(
            directory, "mean", MEAN_ARRAYS, MEAN_FACTS, MEAN_FORMAT, ("params", "n_outputs")
        )
        mean = arrays.get("mean")
        g = facts["n_outputs"]
        if mean is None:
            raise InputError("the mean model lacks the array 'mean'", None, arrays_path)
        if mean.dtype.kind not in "fiu" or mean.shape != (g,) or not np.all(np.isfinite(mean)):
            raise InputError(
                f"inconsistent mean model array: 'mean' is {mean.dtype} of shape {tuple(mean.shape)}, "
                f"expected {g} finite numbers",
                None,
                arrays_path,
            )
        head = cls(facts["params"], seed=int(facts.get("seed", 0)))
        head.mean = np.asarray(mean, dtype=np.float64)
        return head
