"""Input normalisation of the cached features, the first layer of the ST-Net, BLEEP and DKAN networks.

``layer`` = a per-spot LayerNorm; ``standard`` = ``Standardize``, per-feature statistics of the training
spots; ``none`` = identity.
"""

from __future__ import annotations

import torch
from torch import nn

from genedml.heads.inputs import CHOICES

INPUT_NORMS = CHOICES["input_norm"]


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature, with statistics of the training spots (buffers: saved with the
    model). As ridge's StandardScaler; unlike a per-spot LayerNorm it keeps each spot's overall feature
    level, which carries signal (e.g. tissue density) in frozen-encoder features."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, x) -> None:
        with torch.no_grad():
            x = x.float()
            std = x.std(0) if x.shape[0] > 1 else torch.ones_like(self.std)
            self.mean.copy_(x.mean(0))
            self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))  # constant features stay as is

    def forward(self, x):
        return (x - self.mean) / self.std


def input_norm(kind: str, dim: int) -> nn.Module:
    """The input normalisation module of one kind (see ``INPUT_NORMS``) for ``dim`` features."""
    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "standard":
        return Standardize(dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown input_norm {kind!r}: {' | '.join(INPUT_NORMS)}")
