"""What every prediction head implements, and the per-section data it is given.

A head is fitted per fold on training sections (model selection on the validation sections), then
predicts held-out sections. Sections are passed whole, so heads that need a section's global context
(all spots and their array coordinates) have it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genedml.tiles.features import SampleFeatures


@dataclass
class Section:
    sample: str
    patient: str
    features: SampleFeatures
    targets: np.ndarray | None  # (N, G) float32; None for slides without counts
    genes: list[str]

    @property
    def n_spots(self) -> int:
        return self.features.n_spots


class Head:
    """Base class. Subclasses set ``kind`` and implement fit / predict / save / load."""

    kind = "base"

    def __init__(self, params: dict, seed: int = 0):
        self.params = dict(params)
        self.seed = int(seed)

    def fit(self, train: list[Section], val: list[Section], test: list[Section] | None = None) -> dict:
        """Train; return facts for the log (chosen hyper-parameters, validation scores, timings).

        ``test`` is passed only when the head's config asks for the reference protocol
        (``selection: test_fold``); honest heads never look at it.
        """
        raise NotImplementedError

    def predict(self, section: Section) -> np.ndarray:
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, params: dict) -> "Head":
        raise NotImplementedError


def neighbour_mean(f: SampleFeatures) -> np.ndarray:
    """Mean of the in-image neighbour tile embeddings per spot."""
    m = f.neighbour_mask[..., None].astype(np.float32)
    return (f.neighbour * m).sum(1) / np.maximum(m.sum(1), 1.0)


def global_mean(f: SampleFeatures) -> np.ndarray:
    """The section's mean local embedding, repeated for every spot."""
    return np.repeat(f.local.mean(0, keepdims=True), f.n_spots, axis=0)


FEATURE_VIEWS = {
    "local": lambda f: f.local,
    "neighbour_mean": neighbour_mean,
    "global_mean": global_mean,
}


def spot_features(f: SampleFeatures, views: list[str]) -> np.ndarray:
    unknown = [v for v in views if v not in FEATURE_VIEWS]
    if unknown:
        raise ValueError(f"unknown feature view(s) {unknown}; choose from {sorted(FEATURE_VIEWS)}")
    return np.concatenate([FEATURE_VIEWS[v](f) for v in views], axis=1).astype(np.float32)
