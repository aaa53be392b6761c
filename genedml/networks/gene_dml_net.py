"""The Gene-DML network (trainable head on cached features).

Image pathway (local tokens, neighbour encoder, global encoder) -> one shared linear projection of every
scale to ``proj_dim`` -> scale-wise fusion: self-attention over the concatenated local, neighbour and
global tokens (the code: one 1-head layer, then an FFN without residual) -> per-scale means (for the
instance-level loss) and the fused representation -> prediction MLP (proj -> 3 proj -> proj -> genes).
Gene encoder: linear -> GELU -> linear -> dropout, residual, LayerNorm, then an FFN, into the same space.
A grouping projection (linear, then L2 normalisation) maps both modalities for feature grouping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genedml.networks.blocks import FeedForward, TransformerEncoder
from genedml.networks.pathway import ImagePathway, masked_mean, width

SCALES = ("local", "neighbour", "global")


class GeneEncoder(nn.Module):
    def __init__(self, n_genes: int, dim: int, dropout: float = 0.3):
        super().__init__()
        self.projection = nn.Linear(n_genes, dim)
        self.fc = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, 2 * dim, 0.1)

    def forward(self, y):
        p = self.projection(y)
        x = self.norm(self.dropout(self.fc(F.gelu(p))) + p)
        return self.ffn(x)  # the code applies the FFN without a residual


class GeneDML(nn.Module):
    def __init__(self, cfg: dict, dims: dict):
        super().__init__()
        self.cfg = cfg
        self.image = ImagePathway(dims["local_dim"], cfg, grid=int(round(dims["neighbour_tiles"] ** 0.5)))
        proj = int(cfg["proj_dim"])
        self.project = nn.Linear(self.image.dim, proj)  # shared by every scale (the code's fc_layer)
        self.fusion = TransformerEncoder(
            proj,
            int(cfg["fusion_depth"]),
            int(cfg["fusion_heads"]),
            width(cfg["fusion_mlp_ratio"], proj),
            float(cfg["fusion_dropout"]),
        )
        self.fusion_ffn = FeedForward(proj, 2 * proj, float(cfg["fusion_dropout"])) if cfg.get("fusion_ffn") else None
        self.gene = GeneEncoder(dims["n_genes"], proj, float(cfg["gene_dropout"]))
        p = float(cfg["predictor_dropout"])
        self.predictor = nn.Sequential(
            nn.Linear(proj, 3 * proj),
            nn.ReLU(),
            nn.Dropout(p),
            nn.Linear(3 * proj, proj),
            nn.ReLU(),
            nn.Dropout(p),
            nn.Linear(proj, dims["n_genes"]),
        )
        self.group_proj = nn.Linear(proj, proj)

    def encode_image(self, batch) -> dict:
        """Fused image representation and the per-scale representations after fusion (not normalised)."""
        parts = self.image(batch)
        tokens, masks, spans = [], [], {}
        start = 0
        for name in SCALES:
            if name not in parts:
                continue
            t = parts[name] if parts[name].dim() == 3 else parts[name].unsqueeze(1)
            t = self.project(t)
            m = (
                parts["neighbour_mask"]
                if name == "neighbour"
                else torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)
            )
            tokens.append(t)
            masks.append(m)
            spans[name] = (start, start + t.shape[1])
            start += t.shape[1]
        x = torch.cat(tokens, 1)
        mask = torch.cat(masks, 1)
        x = self.fusion(x, key_mask=mask)
        if self.fusion_ffn is not None:
            x = self.fusion_ffn(x)
        scales = {name: masked_mean(x[:, a:b], mask[:, a:b]) for name, (a, b) in spans.items()}
        if self.cfg.get("pool", "scales") == "tokens":
            fused = masked_mean(x, mask)
        else:
            fused = torch.stack(list(scales.values())).mean(0)
        return {"scales": scales, "fused": fused}

    def encode_gene(self, targets):
        return self.gene(targets)

    def group_space(self, x):
        return F.normalize(self.group_proj(x), dim=-1)

    def forward(self, batch):
        return self.predictor(self.encode_image(batch)["fused"])
