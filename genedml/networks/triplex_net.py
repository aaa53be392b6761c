"""TRIPLEX-style network: local / neighbour / global fusion with one prediction per scale.

The same image pathway as Gene-DML (neighbour encoder with relative-position bias and key masking,
global encoder with the grid convolution). Fusion ``cross`` is TRIPLEX's: the global token queries the
local tokens and, separately, the neighbour tokens (cross-attention layers shared by both), the two
results are summed and normalised. Fusion ``self`` is Gene-DML's self-attention over all tokens. Linear
heads predict the genes from the fused token and from each scale (local mean, neighbour mean, global);
the scale heads are trained by TRIPLEX's self-distillation terms (``losses.self_distillation_loss``).
"""

from __future__ import annotations

import torch
from torch import nn

from genedml.networks.blocks import CrossEncoder, TransformerEncoder
from genedml.networks.pathway import ImagePathway, masked_mean, width


class Triplex(nn.Module):
    def __init__(self, cfg: dict, dims: dict):
        super().__init__()
        self.cfg = {**cfg, "use_neighbour": True, "use_global": True}
        self.image = ImagePathway(dims["local_dim"], self.cfg, grid=int(round(dims["neighbour_tiles"] ** 0.5)))
        e = self.image.dim
        args = (
            e,
            int(cfg["fusion_depth"]),
            int(cfg["fusion_heads"]),
            width(cfg["fusion_mlp_ratio"], e),
            float(cfg["fusion_dropout"]),
        )
        self.mode = cfg.get("fusion", "cross")
        if self.mode == "cross":
            self.fusion = CrossEncoder(*args)
        elif self.mode == "self":
            self.fusion = TransformerEncoder(*args)
        else:
            raise ValueError(f"unknown TRIPLEX fusion {self.mode!r}: cross | self")
        self.norm = nn.LayerNorm(e)
        g = dims["n_genes"]
        self.fc = nn.Linear(e, g)
        self.fc_scale = nn.ModuleDict({s: nn.Linear(e, g) for s in ("local", "neighbour", "global")})

    def outputs(self, batch) -> dict:
        parts = self.image(batch)
        local, neigh, mask, glob = parts["local"], parts["neighbour"], parts["neighbour_mask"], parts["global"]
        if self.mode == "cross":
            q = glob.unsqueeze(1)
            fused = self.norm((self.fusion(q, local) + self.fusion(q, neigh, key_mask=mask)).squeeze(1))
            scales = {"local": local.mean(1), "neighbour": masked_mean(neigh, mask), "global": glob}
        else:
            x = torch.cat([local, neigh, glob.unsqueeze(1)], 1)
            ones = torch.ones(local.shape[:2], dtype=torch.bool, device=local.device)
            full = torch.cat([ones, mask, ones[:, :1]], 1)
            x = self.norm(self.fusion(x, key_mask=full))
            t = local.shape[1]
            scales = {"local": x[:, :t].mean(1), "neighbour": masked_mean(x[:, t:-1], mask), "global": x[:, -1]}
            fused = torch.stack(list(scales.values())).mean(0)
        return {"fused": self.fc(fused), **{s: self.fc_scale[s](v) for s, v in scales.items()}}

    def forward(self, batch):
        return self.outputs(batch)["fused"]
