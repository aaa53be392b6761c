"""BLEEP-style network: image and expression projections into one space, prediction by nearest references.

Projection heads as BLEEP's: Linear -> GELU -> Linear -> dropout, residual to the first Linear, LayerNorm.
The image input is the (B, D) tensor of the spot's concatenated feature views, normalised first. The
reference set (the expression embeddings and measured expression of the training spots) is kept in
buffers, so it is saved with the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genedml.networks.input_norm import input_norm


def knn_predict(query, keys, values, k: int, aggregate: str = "mean", temperature: float = 1.0):
    """Mean (or similarity-weighted mean) of ``values`` of the ``k`` keys most cosine-similar to each query."""
    if keys.shape[0] == 0:
        raise RuntimeError("the BLEEP reference set is empty (model not fitted?)")
    k = max(1, min(int(k), keys.shape[0]))
    sim = F.normalize(query.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T
    top, idx = sim.topk(k, dim=1)
    neigh = values[idx]  # (B, k, G)
    if aggregate == "mean":
        return neigh.mean(1)
    if aggregate == "weighted":
        w = torch.softmax(top / temperature, dim=1)
        return (w[..., None] * neigh).sum(1)
    raise ValueError(f"unknown aggregate {aggregate!r}: mean | weighted")


class Projection(nn.Module):
    def __init__(self, in_dim: int, dim: int, dropout: float):
        super().__init__()
        self.first = nn.Linear(in_dim, dim)
        self.second = nn.Sequential(nn.GELU(), nn.Linear(dim, dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        h = self.first(x)
        return self.norm(h + self.second(h))


class BLEEP(nn.Module):
    """``k``, ``aggregate`` and ``temperature`` set the prediction (see ``knn_predict``); ``n_reference`` is
    the size of the reference buffers (0 until set, the saved size when loading)."""

    def __init__(
        self,
        in_dim: int,
        n_genes: int,
        dim: int,
        dropout: float,
        norm: str,
        k: int,
        aggregate: str = "mean",
        temperature: float = 1.0,
        n_reference: int = 0,
    ):
        super().__init__()
        self.k, self.aggregate, self.temperature = int(k), aggregate, float(temperature)
        self.standardize = input_norm(norm, in_dim)
        self.image = Projection(in_dim, dim, dropout)
        self.expression = Projection(n_genes, dim, dropout)
        self.register_buffer("ref_keys", torch.zeros(n_reference, dim))
        self.register_buffer("ref_values", torch.zeros(n_reference, n_genes))

    def embed_image(self, x):
        return self.image(self.standardize(x))

    def forward(self, x):
        """(B, in_dim) views -> (B, n_genes): the expression of the nearest reference spots."""
        return knn_predict(
            self.embed_image(x), self.ref_keys, self.ref_values, self.k, self.aggregate, self.temperature
        )
