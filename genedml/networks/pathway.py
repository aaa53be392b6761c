"""The image pathway shared by Gene-DML and TRIPLEX: local tokens, neighbour encoder, global encoder.

Input is a ``Batch`` of the shared training loop (``genedml.heads.torch_head``): the batch's cached
local embeddings (or token maps), neighbour tiles and mask, and, per section present in the batch, the
whole section's local embeddings and grid coordinates for the global encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from genedml.networks.context import GlobalEncoder, NeighbourEncoder


def width(ratio: float, dim: int) -> int:
    return max(1, int(round(float(ratio) * dim)))


class ImagePathway(nn.Module):
    def __init__(self, in_dim: int, cfg: dict, grid: int = 5):
        super().__init__()
        enc = int(cfg["encoder_dim"] or in_dim)
        self.dim = enc
        # per-dimension standardisation of the cached features with training statistics (set_input_stats);
        # identity until set, and with ``standardise_inputs: false``
        self.standardise = bool(cfg.get("standardise_inputs", True))
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_scale", torch.ones(in_dim))
        # encoder_dim set: one shared linear map of the cached features to a smaller width (CPU sizes)
        self.input_proj = nn.Linear(in_dim, enc) if cfg["encoder_dim"] else nn.Identity()
        # spot_encoder resnet18 (TRIPLEX): the local tokens are a ResNet-18's feature map over the spot image,
        # trained with the head; the cached local embeddings still feed the global encoder
        self.spot = spot_encoder(cfg)
        self.spot_proj = nn.Linear(self.spot.dim, enc) if self.spot is not None else None
        self.use_tokens = cfg.get("local_input", "auto") in ("auto", "tokens")
        self.require_tokens = cfg.get("local_input", "auto") == "tokens"
        self.neighbour = None
        if cfg.get("use_neighbour", True):
            self.neighbour = NeighbourEncoder(
                enc,
                int(cfg["neighbour_depth"]),
                int(cfg["neighbour_heads"]),
                width(cfg["neighbour_mlp_ratio"], enc),
                float(cfg["neighbour_dropout"]),
                grid,
            )
        self.global_ = None
        if cfg.get("use_global", True):
            self.global_ = GlobalEncoder(
                enc,
                int(cfg["global_depth"]),
                int(cfg["global_heads"]),
                width(cfg["global_mlp_ratio"], enc),
                float(cfg["global_dropout"]),
                int(cfg.get("global_kernel", 3)),
            )

    @torch.no_grad()
    def set_input_stats(self, local):
        """Training statistics of the cached local embeddings (N, D); constant dimensions keep scale 1."""
        if not self.standardise:
            return
        self.in_mean.copy_(local.mean(0))
        std = local.std(0)
        self.in_scale.copy_(torch.where(std > 1e-6, 1.0 / std.clamp_min(1e-6), torch.ones_like(std)))

    def embed(self, x):
        """Standardise, then map to the encoders' width."""
        return self.input_proj((x - self.in_mean) * self.in_scale)

    def local_tokens(self, batch):
        if self.spot is not None:
            return self.spot_proj(self.spot.tokens(required_pixels(batch)))  # (B, h * w, E)
        # the batch streams its token maps from the feature store when asked: ask only when they are used
        tokens = getattr(batch, "local_tokens", None) if self.use_tokens else None
        if tokens is not None:
            return self.embed(tokens.to(batch.local.dtype))  # (B, T, E)
        if self.require_tokens:
            raise ValueError(
                "local_input: tokens, but the features carry no local token maps "
                "(embed with encoder.cache_local_tokens: true, or use local_input: auto | cls)"
            )
        return self.embed(batch.local).unsqueeze(1)  # (B, 1, E): the cached CLS embedding

    def global_tokens(self, batch):
        """(B, E): the global encoder run over every section in the batch, rows picked in batch order."""
        out = []
        for section, index in batch.groups:
            enc = self.global_(self.embed(section.local), section.coords)
            out.append(enc[index])
        return torch.cat(out)

    def forward(self, batch) -> dict:
        parts = {"local": self.local_tokens(batch)}
        if self.neighbour is not None:
            parts["neighbour"] = self.neighbour(self.embed(batch.neighbour), batch.neighbour_mask)
            parts["neighbour_mask"] = batch.neighbour_mask
        if self.global_ is not None:
            parts["global"] = self.global_tokens(batch)
        return parts


def spot_encoder(cfg: dict):
    """The trainable spot-image encoder the settings ask for (``spot_encoder``), or None (frozen)."""
    kind = cfg.get("spot_encoder", "frozen")
    if kind == "frozen":
        return None
    from genedml.networks.spot_encoder import SpotEncoder

    return SpotEncoder(kind)


def required_pixels(batch):
    pixels = batch.spot_pixels
    if pixels is None:
        raise ValueError("spot_encoder resnet18 needs the spot images, but the sections carry none (--spot-images)")
    return pixels


def masked_mean(tokens, mask=None):
    """Mean over tokens (B, T, D), counting only tokens where ``mask`` (B, T) is True."""
    if mask is None:
        return tokens.mean(1)
    m = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
