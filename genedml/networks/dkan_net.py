"""DKAN-style network: gene-semantic queries over image and expression features (cached, frozen-encoder).

- **Gene queries.** One text embedding per gene -> linear to ``dim`` -> a small transformer over the G
  gene tokens (gene-gene self-attention). ``gene_queries: learned`` replaces the text vectors by free
  per-gene parameters (the "no gene semantics" ablation).
- **Image path.** Per spot, image tokens at three scales (each a linear projection of the frozen embedding,
  after one shared input normalisation, ``input_norm``): the spot's local embedding (patch level), its
  5 x 5 neighbour tile embeddings (region level, masked outside the image, learned position per tile) and a
  section-level global token (a transformer over all of the section's local embeddings with sinusoidal
  array-coordinate positions; the WSI level). The gene queries cross-attend to each scale separately
  (intermediate predictions) and to all tokens together (the fused prediction, used at test time).
- **Expression path** (training only, ``forward_train``). Each gene's measured value becomes a token (gene
  key + an MLP of the value); the same gene queries cross-attend to them.

Input is a ``Batch`` of the shared training loop (``genedml.heads.torch_head``); the global token reads
every section of the batch whole from ``Batch.groups``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genedml.networks.input_norm import input_norm

SCALES = ("local", "neighbour", "global")


def sinusoidal_2d(coords, dim: int):
    """(N, 2) array coordinates -> (N, dim) sin/cos features (half the channels per axis)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(0, half, 2, device=coords.device).float() / half)
    out = []
    for axis in range(2):
        ang = coords[:, axis : axis + 1].float() * freqs[None]
        out += [torch.sin(ang), torch.cos(ang)]
    pe = torch.cat(out, dim=1)
    return F.pad(pe, (0, dim - pe.shape[1]))


def transformer_encoder(dim: int, heads: int, ff_mult: int, dropout: float, layers: int) -> nn.TransformerEncoder:
    """Pre-norm GELU transformer layers of torch, feed-forward width ``max(1, ff_mult) * dim``."""
    layer = nn.TransformerEncoderLayer(
        dim,
        heads,
        dim_feedforward=max(1, ff_mult) * dim,
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class CrossBlock(nn.Module):
    """The G gene queries (shared by every spot) attend to each spot's tokens; then a feed-forward layer
    of width ``ff_hidden`` (none if 0).

    Pre-norm, residual. The queries are projected once per batch, not once per spot; with a single
    key token the attention weights are exactly 1, so the softmax is skipped.
    """

    def __init__(self, dim: int, heads: int, dropout: float, ff_hidden: int = 0):
        super().__init__()
        self.heads, self.attn_dropout = heads, dropout
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.drop = nn.Dropout(dropout)
        self.ff = (
            nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, ff_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_hidden, dim)
            )
            if ff_hidden > 0
            else None
        )

    def attend(self, genes, kv, v, pad_mask):
        """Multi-head attention of the (projected) gene queries to the normalised tokens -> (B, G, d)."""
        b, t, d = kv.shape
        h, hd = self.heads, d // self.heads
        q = self.q(self.norm_q(genes))
        q = (q[None].expand(b, -1, -1) if q.dim() == 2 else q).reshape(b, -1, h, hd).transpose(1, 2)
        k = self.k(kv).reshape(b, t, h, hd).transpose(1, 2)
        vh = v.reshape(b, t, h, hd).transpose(1, 2)
        mask = None if pad_mask is None else ~pad_mask[:, None, None, :]
        ctx = F.scaled_dot_product_attention(
            q, k, vh, attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return ctx.transpose(1, 2).reshape(b, -1, d)

    def forward(self, genes, kv, pad_mask=None):
        """genes (G, d) or (B, G, d); kv (B, T, d); pad_mask (B, T) True = ignore -> (B, G, d)."""
        kv = self.norm_kv(kv)
        v = self.v(kv)
        # one key: attention weight 1 for every gene, the context is its value (B, 1, d)
        ctx = v if kv.shape[1] == 1 else self.attend(genes, kv, v, pad_mask)
        h = genes + self.drop(self.out(ctx))  # broadcasts (G, d) + (B, G|1, d)
        if h.shape[1] == 1:
            h = h.expand(-1, genes.shape[-2], -1)
        return h + self.ff(h) if self.ff is not None else h


class GeneReadout(nn.Module):
    """Gene-specific linear read-out: y_g = <h_g, w_g> + b_g."""

    def __init__(self, n_genes: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.weight = nn.Parameter(torch.randn(n_genes, dim) * dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(n_genes))

    def forward(self, h):
        return (self.norm(h) * self.weight).sum(-1) + self.bias


class DKAN(nn.Module):
    """``cfg``: the head's resolved settings (dim, heads, ff_mult, dropout, gene_layers, global_layers,
    clip_dim, gene_queries, input_norm); ``dims``: n_genes, local_dim, neighbour_tiles; ``gene_text``:
    the (G, E) gene text embeddings (``gene_queries: semantic``) or None."""

    def __init__(self, cfg: dict, dims: dict, gene_text=None):
        super().__init__()
        d, heads, drop, ff_mult = int(cfg["dim"]), int(cfg["heads"]), float(cfg["dropout"]), int(cfg["ff_mult"])
        n_genes, feat_dim = dims["n_genes"], dims["local_dim"]
        self.dim = d
        self.semantic = cfg["gene_queries"] == "semantic"
        if self.semantic:
            self.register_buffer("gene_text", torch.as_tensor(gene_text, dtype=torch.float32))
            self.gene_in = nn.Linear(self.gene_text.shape[1], d)
        else:
            self.gene_free = nn.Parameter(torch.randn(n_genes, d) * 0.02)
        self.gene_encoder = transformer_encoder(d, heads, ff_mult, drop, int(cfg["gene_layers"]))
        self.standardize = input_norm(cfg["input_norm"], feat_dim)  # shared by the three scales
        self.local_proj = nn.Sequential(self.standardize, nn.Linear(feat_dim, d))
        self.neigh_proj = nn.Sequential(self.standardize, nn.Linear(feat_dim, d))
        self.neigh_pos = nn.Parameter(torch.zeros(dims["neighbour_tiles"], d))
        self.global_proj = nn.Sequential(self.standardize, nn.Linear(feat_dim, d))
        global_layers = int(cfg["global_layers"])
        self.global_encoder = transformer_encoder(d, heads, ff_mult, drop, global_layers) if global_layers > 0 else None
        self.scale_embed = nn.Parameter(torch.zeros(3, d))
        # per-scale blocks without feed-forward: B x G tokens per block make the FFNs the main cost
        self.scale_blocks = nn.ModuleList([CrossBlock(d, heads, drop) for _ in SCALES])
        self.fusion = CrossBlock(d, heads, drop, ff_mult * d)
        self.scale_readouts = nn.ModuleList([GeneReadout(n_genes, d) for _ in SCALES])
        self.readout = GeneReadout(n_genes, d)
        # expression path (training only)
        self.value_mlp = nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
        self.expr_block = CrossBlock(d, heads, drop, ff_mult * d)
        self.img_clip = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, int(cfg["clip_dim"])))
        self.expr_clip = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, int(cfg["clip_dim"])))

    def gene_tokens(self):
        g = self.gene_in(self.gene_text) if self.semantic else self.gene_free
        return self.gene_encoder(g[None])[0]  # (G, d)

    def section_global(self, batch):
        """Global token of every spot in the batch: its place in a transformer over its whole section."""
        out = []
        for sec, rows in batch.groups:
            tokens = self.global_proj(sec.local) + sinusoidal_2d(sec.coords, self.dim)
            if self.global_encoder is not None:
                tokens = self.global_encoder(tokens[None])[0]
            out.append(tokens[rows])
        return torch.cat(out)

    def image_tokens(self, batch):
        local = self.local_proj(batch.local)[:, None] + self.scale_embed[0]
        neigh = self.neigh_proj(batch.neighbour) + self.neigh_pos + self.scale_embed[1]
        mask = ~batch.neighbour_mask  # True = padding
        mask = mask & ~mask.all(1, keepdim=True)  # a spot with no tile in the image attends to the zeros
        glob = self.section_global(batch)[:, None] + self.scale_embed[2]
        return local, neigh, mask, glob

    def image_path(self, batch, genes=None):
        genes = self.gene_tokens() if genes is None else genes
        local, neigh, mask, glob = self.image_tokens(batch)
        per_scale = [
            self.scale_blocks[0](genes, local),
            self.scale_blocks[1](genes, neigh, mask),
            self.scale_blocks[2](genes, glob),
        ]
        keep = torch.zeros(mask.shape[0], 1, dtype=torch.bool, device=mask.device)
        fused = self.fusion(genes, torch.cat([local, neigh, glob], 1), torch.cat([keep, mask, keep], 1))
        return fused, per_scale

    def forward(self, batch):
        fused, _ = self.image_path(batch)
        return self.readout(fused)

    def forward_train(self, batch) -> dict:
        """The fused and per-scale predictions and the two paths' CLIP embeddings (needs ``batch.targets``)."""
        genes = self.gene_tokens()
        fused, per_scale = self.image_path(batch, genes)
        expr_tokens = genes[None] + self.value_mlp(batch.targets[..., None])
        expr = self.expr_block(genes, expr_tokens)
        # CLIP on what each path adds to the gene queries (the queries themselves are the same for every spot)
        return {
            "pred": self.readout(fused),
            "scale_preds": [r(h) for r, h in zip(self.scale_readouts, per_scale)],
            "img_embed": self.img_clip((fused - genes).mean(1)),
            "expr_embed": self.expr_clip((expr - genes).mean(1)),
        }
