"""DKAN-style network: gene-semantic queries over image and expression features (cached, frozen-encoder).

Settings (``cfg``, resolved by ``genedml.heads.presets.resolve``; docs/heads.md):

- **Gene queries** (knowledge path). One text embedding per gene -> linear to ``dim`` -> a transformer over
  the G gene tokens (``gene_layers``; DKAN's text encoder, depth 3). ``gene_queries: learned`` replaces the
  text vectors by free per-gene parameters (the "no gene semantics" control).
- **Image path.** Per spot, image tokens at three scales (each a linear projection of the frozen embedding,
  after one shared input normalisation, ``input_norm``): the spot's local embedding (patch level), its
  5 x 5 neighbour tile embeddings (region level, masked outside the image, learned position per tile) and a
  section-level global token (a transformer over all of the section's local embeddings with sinusoidal
  array-coordinate positions; the WSI level).
- **Knowledge fusion.** The gene queries cross-attend to all image tokens (``fusion_layers`` blocks) ->
  (B, G, dim); ``readout: shared`` predicts every gene with one ``Linear(dim, 1)`` (after a LayerNorm), so
  a gene's identity reaches its prediction only through its query (DKAN's code); ``per_gene`` adds weights
  and a bias per gene.
- **Intermediate predictions** (self-distilled towards the final one). ``image`` (DKAN's code, 4): per-gene
  linear heads (after a LayerNorm) on the image alone, one per scale (local, neighbour mean, global) and one on an image-fusion
  token (a transformer layer over the three scales' tokens, masked mean). ``scales`` (the earlier head, 3):
  the gene queries cross-attend to each scale separately, per-gene read-outs.
- ``knowledge_path: false`` (DKAN Table 3, without knowledge): no gene queries; the image-fusion token's
  per-gene head predicts, the three scale heads are the intermediates.
- **Expression path** (training only, ``forward_train``; ``contrast`` not ``none``). Each gene's measured
  value becomes a token (gene key + an MLP of the value); the same gene queries cross-attend to them
  (``expr_layers`` blocks). ``gene_nt_xent`` contrasts the two paths' per-gene outputs (B, G, ·) over all
  (spot, gene) pairs; ``spot_clip`` (earlier head) contrasts what each path adds to the queries,
  averaged over genes (B, ·). ``clip_dim`` projects them first (null: no projection, the code's).

Input is a ``Batch`` of the shared training loop (``genedml.heads.torch_head``); the global token reads
every section of the batch whole from ``Batch.groups``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genedml.networks.input_norm import input_norm
from genedml.networks.pathway import required_pixels, spot_encoder

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
    """Gene-specific linear read-out: y_g = <LN(h_g), w_g> + b_g."""

    def __init__(self, n_genes: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.weight = nn.Parameter(torch.randn(n_genes, dim) * dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(n_genes))

    def forward(self, h):
        return (self.norm(h) * self.weight).sum(-1) + self.bias


class SharedReadout(nn.Module):
    """One read-out for every gene: y_g = Linear(LN(h_g)) with a single weight vector and bias (DKAN's
    ``Linear(emb_dim, 1)``): two genes with the same embedding get the same prediction."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, 1)

    @property
    def bias(self):
        return self.linear.bias

    def forward(self, h):
        return self.linear(self.norm(h)).squeeze(-1)


class ImageHead(nn.Module):
    """Per-gene linear head on an image token (after a LayerNorm, as the code's encoders end in one)."""

    def __init__(self, dim: int, n_genes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, n_genes)

    @property
    def bias(self):
        return self.linear.bias

    def forward(self, x):
        return self.linear(self.norm(x))


def _masked_mean(tokens, pad_mask):
    keep = (~pad_mask).to(tokens.dtype)[..., None]
    return (tokens * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class DKAN(nn.Module):
    """``cfg``: the head's resolved settings (dim, heads, ff_mult, dropout, gene_layers, global_layers,
    fusion_layers, expr_layers, clip_dim, gene_queries, knowledge_path, contrast, readout, intermediates,
    input_norm); ``dims``: n_genes, local_dim, neighbour_tiles; ``gene_text``: the (G, E) gene text
    embeddings (``gene_queries: semantic``) or None."""

    def __init__(self, cfg: dict, dims: dict, gene_text=None):
        super().__init__()
        d, heads, drop, ff_mult = int(cfg["dim"]), int(cfg["heads"]), float(cfg["dropout"]), int(cfg["ff_mult"])
        n_genes, feat_dim = dims["n_genes"], dims["local_dim"]
        self.dim = d
        self.knowledge = bool(cfg["knowledge_path"])
        self.contrast = cfg["contrast"] if self.knowledge else "none"
        self.intermediates = cfg["intermediates"] if self.knowledge else "image"
        self.semantic = self.knowledge and cfg["gene_queries"] == "semantic"
        if self.knowledge:
            if self.semantic:
                self.register_buffer("gene_text", torch.as_tensor(gene_text, dtype=torch.float32))
                self.gene_in = nn.Linear(self.gene_text.shape[1], d)
            else:
                self.gene_free = nn.Parameter(torch.randn(n_genes, d) * 0.02)
            self.gene_encoder = transformer_encoder(d, heads, ff_mult, drop, int(cfg["gene_layers"]))
        self.standardize = input_norm(cfg["input_norm"], feat_dim)  # shared by the three scales
        # spot_encoder resnet18 (DKAN's patch level): a ResNet-18 over the spot image, trained with the head
        self.spot = spot_encoder(cfg)
        self.spot_proj = nn.Linear(self.spot.dim, d) if self.spot is not None else None
        self.local_proj = nn.Sequential(self.standardize, nn.Linear(feat_dim, d)) if self.spot is None else None
        self.neigh_proj = nn.Sequential(self.standardize, nn.Linear(feat_dim, d))
        self.neigh_pos = nn.Parameter(torch.zeros(dims["neighbour_tiles"], d))
        self.global_proj = nn.Sequential(self.standardize, nn.Linear(feat_dim, d))
        global_layers = int(cfg["global_layers"])
        self.global_encoder = transformer_encoder(d, heads, ff_mult, drop, global_layers) if global_layers > 0 else None
        self.scale_embed = nn.Parameter(torch.zeros(3, d))
        if self.intermediates == "scales":
            # per-scale blocks without feed-forward: B x G tokens per block make the FFNs the main cost
            self.scale_blocks = nn.ModuleList([CrossBlock(d, heads, drop) for _ in SCALES])
            self.scale_readouts = nn.ModuleList([GeneReadout(n_genes, d) for _ in SCALES])
        else:  # image-only heads: the fused image token, then local, neighbour, global
            self.image_fusion = transformer_encoder(d, heads, ff_mult, drop, 1)
            self.image_heads = nn.ModuleList([ImageHead(d, n_genes) for _ in range(1 + len(SCALES))])
        if self.knowledge:
            self.fusion = nn.ModuleList(
                [CrossBlock(d, heads, drop, ff_mult * d) for _ in range(max(1, int(cfg["fusion_layers"])))]
            )
            self.readout = SharedReadout(d) if cfg["readout"] == "shared" else GeneReadout(n_genes, d)
        if self.contrast != "none":  # expression path (training only)
            self.value_mlp = nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
            self.expr_blocks = nn.ModuleList(
                [CrossBlock(d, heads, drop, ff_mult * d) for _ in range(max(1, int(cfg["expr_layers"])))]
            )
            c = cfg["clip_dim"]
            self.img_clip = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, int(c))) if c else nn.Identity()
            self.expr_clip = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, int(c))) if c else nn.Identity()

    def output_layers(self) -> list:
        """The layers whose bias starts at the training mean: (shared read-out or None, per-gene layers)."""
        shared = self.readout if self.knowledge and isinstance(self.readout, SharedReadout) else None
        per_gene = list(self.scale_readouts) if self.intermediates == "scales" else list(self.image_heads)
        if self.knowledge and shared is None:
            per_gene.append(self.readout)
        return shared, per_gene

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
        if self.spot is not None:
            local = self.spot_proj(self.spot.pooled(required_pixels(batch)))[:, None] + self.scale_embed[0]
        else:
            local = self.local_proj(batch.local)[:, None] + self.scale_embed[0]
        neigh = self.neigh_proj(batch.neighbour) + self.neigh_pos + self.scale_embed[1]
        mask = ~batch.neighbour_mask  # True = padding
        mask = mask & ~mask.all(1, keepdim=True)  # a spot with no tile in the image attends to the zeros
        glob = self.section_global(batch)[:, None] + self.scale_embed[2]
        return local, neigh, mask, glob

    def image_intermediates(self, local, neigh, mask, glob, all_tokens, all_mask):
        """Image-only per-gene predictions: [fused image token, local, neighbour mean, global]."""
        fused = _masked_mean(self.image_fusion(all_tokens, src_key_padding_mask=all_mask), all_mask)
        pooled = [fused, local[:, 0], _masked_mean(neigh, mask), glob[:, 0]]
        return [h(x) for h, x in zip(self.image_heads, pooled)]

    def image_path(self, batch, genes=None, with_intermediates: bool = True):
        """(fused gene embeddings (B, G, d) or None, final prediction (B, G), intermediate predictions)."""
        local, neigh, mask, glob = self.image_tokens(batch)
        keep = torch.zeros(mask.shape[0], 1, dtype=torch.bool, device=mask.device)
        all_tokens, all_mask = torch.cat([local, neigh, glob], 1), torch.cat([keep, mask, keep], 1)
        if not self.knowledge:
            preds = self.image_intermediates(local, neigh, mask, glob, all_tokens, all_mask)
            return None, preds[0], preds[1:]
        genes = self.gene_tokens() if genes is None else genes
        h = genes
        for block in self.fusion:
            h = block(h, all_tokens, all_mask)
        inter = []
        if with_intermediates and self.intermediates == "scales":
            per_scale = [
                self.scale_blocks[0](genes, local),
                self.scale_blocks[1](genes, neigh, mask),
                self.scale_blocks[2](genes, glob),
            ]
            inter = [r(x) for r, x in zip(self.scale_readouts, per_scale)]
        elif with_intermediates:
            inter = self.image_intermediates(local, neigh, mask, glob, all_tokens, all_mask)
        return h, self.readout(h), inter

    def forward(self, batch):
        return self.image_path(batch, with_intermediates=not self.knowledge)[1]

    def forward_train(self, batch) -> dict:
        """The final and intermediate predictions and, with a contrastive path, the two paths' embeddings
        (``gene_nt_xent``: (B, G, c); ``spot_clip``: (B, c)); needs ``batch.targets``."""
        genes = self.gene_tokens() if self.knowledge else None
        fused, pred, inter = self.image_path(batch, genes)
        out = {"pred": pred, "intermediates": inter}
        if self.contrast == "none":
            return out
        expr = genes[None] + self.value_mlp(batch.targets[..., None])
        h = genes
        for block in self.expr_blocks:
            h = block(h, expr)
        if self.contrast == "gene_nt_xent":
            out["img_embed"], out["expr_embed"] = self.img_clip(fused), self.expr_clip(h)
        else:  # CLIP on what each path adds to the gene queries (the same for every spot), averaged over genes
            out["img_embed"] = self.img_clip((fused - genes).mean(1))
            out["expr_embed"] = self.expr_clip((h - genes).mean(1))
        return out
