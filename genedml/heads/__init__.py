"""Prediction heads, selected by ``type`` in a head's config section."""

from __future__ import annotations

from .base import Head, Section
from .bleep import BLEEPHead
from .dkan import DKANHead
from .genedml import GeneDMLHead
from .ridge import RidgeHead
from .stnet import STNetHead
from .triplex import TriplexHead

HEADS: dict[str, type[Head]] = {"ridge": RidgeHead, "stnet": STNetHead}
HEADS.update({"dkan": DKANHead, "bleep": BLEEPHead})
HEADS.update({"genedml": GeneDMLHead, "triplex": TriplexHead})


def head_class(kind: str) -> type[Head]:
    if kind not in HEADS:
        raise ValueError(f"unknown head type {kind!r}; available: {', '.join(sorted(HEADS))}")
    return HEADS[kind]


__all__ = ["HEADS", "Head", "Section", "head_class"]
