"""Per-spot feature views of a training batch, as tensors (the torch side of ``base.FEATURE_VIEWS``).

``local`` = the spot's own embedding; ``neighbour_mean`` = mean of its in-image neighbour tiles;
``global_mean`` = the mean local embedding of the spot's whole section (same for every spot of it).
"""

from __future__ import annotations

VIEWS = ("local", "neighbour_mean", "global_mean")


def check_views(views) -> list[str]:
    views = [views] if isinstance(views, str) else list(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"unknown or empty feature view(s) {unknown or views}; choose from {list(VIEWS)}")
    return views


def batch_views(batch, views: list[str]):
    """(B, len(views) * D) float tensor."""
    import torch

    out = []
    for v in views:
        if v == "local":
            out.append(batch.local)
        elif v == "neighbour_mean":
            m = batch.neighbour_mask[..., None].to(batch.neighbour.dtype)
            out.append((batch.neighbour * m).sum(1) / m.sum(1).clamp_min(1.0))
        else:
            out.append(torch.cat([sec.local.mean(0, keepdim=True).expand(len(rows), -1)
                                  for sec, rows in section_groups(batch)]))
    return torch.cat(out, dim=1)


def section_groups(batch) -> list:
    """``[(SectionTensors, rows)]`` of a batch in the order of its rows (one group unless batches mix sections)."""
    groups = getattr(batch, "groups", None)
    return list(groups) if groups else [(batch.section, batch.index)]


def standardizer(dim: int):
    """An ``nn.Module`` computing ``(x - mean) / std`` per feature, with statistics of the training spots
    (buffers: saved with the model). As ridge's StandardScaler; unlike a per-spot LayerNorm it keeps each
    spot's overall feature level, which carries signal (e.g. tissue density) in frozen-encoder features."""
    import torch
    import torch.nn as nn

    class Standardize(nn.Module):
        def __init__(self):
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

    return Standardize()


def training_views(train: list, views: list[str]):
    """The views of every training spot, (N, len(views) * D), for fitting a standardizer."""
    import torch

    from genedml.heads.torch_head import make_batch

    return torch.cat([batch_views(make_batch(st, torch.arange(st.n_spots, device=st.local.device)), views)
                      for st in train])


INPUT_NORMS = ("layer", "standard", "none")


def input_norm(kind: str, dim: int):
    """The input normalisation of a head: ``layer`` (per-spot LayerNorm), ``standard`` (per-feature training
    statistics, see ``standardizer``) or ``none``."""
    import torch.nn as nn

    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "standard":
        return standardizer(dim)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown input_norm {kind!r}: {' | '.join(INPUT_NORMS)}")


def check_input_norm(kind: str) -> str:
    if kind not in INPUT_NORMS:
        raise ValueError(f"unknown input_norm {kind!r}: {' | '.join(INPUT_NORMS)}")
    return kind


def fit_input_norm(module, x) -> None:
    """Fit a ``standard`` normalisation to training inputs; the others have nothing to fit."""
    if hasattr(module, "fit"):
        module.fit(x)
