"""DKAN-style head: gene-semantic queries over image and expression features (METHOD.md §6).

What is built here, on the cached (frozen-encoder) features:

- **Gene queries.** One text embedding per gene (``genedml.study.gene_semantics``: a local sentence model over the
  gene symbol, or over a user-supplied description) -> linear to ``dim`` -> a small transformer over the G
  gene tokens (gene-gene self-attention). ``gene_queries: learned`` replaces the text vectors by free
  per-gene parameters (the "no gene semantics" ablation).
- **Image path.** Per spot, image tokens at three scales (each a linear projection of the frozen embedding,
  standardised with the training spots' per-feature statistics, ``input_norm``): the spot's local
  embedding (patch level), its
  5 x 5 neighbour tile embeddings (region level, masked outside the image, learned position per tile) and a
  section-level global token (a transformer over all of the section's local embeddings with sinusoidal
  array-coordinate positions; the WSI level). The gene queries cross-attend to each scale separately
  (intermediate predictions) and to all tokens together (the fused prediction, used at test time).
- **Expression path** (training only). Each gene's measured value becomes a token (gene key + an MLP of the
  value); the same gene queries cross-attend to them.
- **Losses.** CLIP loss between what each path adds to the gene queries, averaged over genes (symmetric
  InfoNCE over the spots of the batch, temperature ``tau``); supervised
  ``MSE(fused, y) + sum_s [(1 - lambda) MSE(pred_s, y) + lambda MSE(pred_s, stopgrad(fused))]`` over the
  scales s (self-distillation of the intermediate predictions towards the fused one, TRIPLEX's form);
  the two losses are balanced by **normalised inverse loss values**:
  ``w_i = (1 / L_i) / sum_j (1 / L_j)`` computed on the detached batch losses, ``L = sum_i w_i L_i``
  (``loss_weights: fixed`` uses ``L_sup + clip_weight * L_clip`` instead).

Not reproduced (see the README): the paper's gene texts (GPT-4o summaries of NCBI descriptions embedded
with BioBERT, 1024-d) — symbol embeddings carry far less biology, so the semantic prior is weak and the
gene queries act mostly as gene identities; and the paper's trainable ResNet18 patch branch — here the patch
level is the frozen cached embedding with a trainable projection, so nothing adapts the pixels to the task.
"""

from __future__ import annotations

import logging
import math

from genedml.heads.inputs import check_input_norm, fit_input_norm, input_norm, section_groups
from genedml.heads.torch_head import Batch, TorchHead

log = logging.getLogger(__name__)

SCALES = ("local", "neighbour", "global")


def inverse_loss_weights(losses):
    """Normalised inverse loss weights ``w_i = (1/L_i) / sum_j (1/L_j)`` (no gradient through them)."""
    import torch

    inv = torch.stack([1.0 / l.detach().float().clamp_min(1e-8) for l in losses])
    return inv / inv.sum()


def clip_loss(a, b, tau: float):
    """Symmetric InfoNCE between paired rows of ``a`` and ``b`` (L2-normalised here), temperature ``tau``."""
    import torch.nn.functional as F

    from genedml.networks import losses

    return losses.clip_loss(F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1), tau)


def distilled_mse(fused, intermediates, y, lam: float):
    """``MSE(fused, y) + sum_s [(1 - lam) MSE(p_s, y) + lam MSE(p_s, fused.detach())]`` and its parts."""
    import torch.nn.functional as F

    mse = F.mse_loss(fused, y)
    teacher = fused.detach()
    parts = [(1 - lam) * F.mse_loss(p, y) + lam * F.mse_loss(p, teacher) for p in intermediates]
    distill = sum(parts) if parts else mse * 0
    return mse + distill, mse, distill


def sinusoidal_2d(coords, dim: int):
    """(N, 2) array coordinates -> (N, dim) sin/cos features (half the channels per axis)."""
    import torch

    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(0, half, 2, device=coords.device).float() / half)
    out = []
    for axis in range(2):
        ang = coords[:, axis : axis + 1].float() * freqs[None]
        out += [torch.sin(ang), torch.cos(ang)]
    pe = torch.cat(out, dim=1)
    return torch.nn.functional.pad(pe, (0, dim - pe.shape[1]))


def build_dkan(dims: dict, p: dict, gene_text):
    import torch
    import torch.nn as nn

    d, heads, drop = int(p["dim"]), int(p["heads"]), float(p["dropout"])
    n_genes, feat_dim, tiles = dims["n_genes"], dims["local_dim"], dims["neighbour_tiles"]

    def encoder(layers):
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=max(1, int(p["ff_mult"])) * d, dropout=drop,
                                           activation="gelu", batch_first=True, norm_first=True)
        return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    class CrossBlock(nn.Module):
        """The G gene queries (shared by every spot) attend to each spot's tokens; then a feed-forward layer.

        Pre-norm, residual. The queries are projected once per batch, not once per spot; with a single
        key token the attention weights are exactly 1, so the softmax is skipped.
        """

        def __init__(self, feed_forward: bool = True):
            super().__init__()
            self.norm_q, self.norm_kv = nn.LayerNorm(d), nn.LayerNorm(d)
            self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
            self.drop = nn.Dropout(drop)
            ff = int(p["ff_mult"]) * d if feed_forward else 0
            self.ff = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, ff), nn.GELU(), nn.Dropout(drop),
                                    nn.Linear(ff, d)) if ff > 0 else None

        def forward(self, genes, kv, pad_mask=None):
            """genes (G, d) or (B, G, d); kv (B, T, d); pad_mask (B, T) True = ignore -> (B, G, d)."""
            import torch.nn.functional as F

            b, t = kv.shape[0], kv.shape[1]
            kv = self.norm_kv(kv)
            v = self.v(kv)
            if t == 1:
                ctx = v  # (B, 1, d): one key, attention weight 1 for every gene
            else:
                q = self.q(self.norm_q(genes))
                q = (q[None].expand(b, -1, -1) if q.dim() == 2 else q).reshape(b, -1, heads, d // heads).transpose(1, 2)
                k = self.k(kv).reshape(b, t, heads, d // heads).transpose(1, 2)
                vh = v.reshape(b, t, heads, d // heads).transpose(1, 2)
                mask = None if pad_mask is None else ~pad_mask[:, None, None, :]
                ctx = F.scaled_dot_product_attention(q, k, vh, attn_mask=mask,
                                                     dropout_p=drop if self.training else 0.0)
                ctx = ctx.transpose(1, 2).reshape(b, -1, d)
            h = genes + self.drop(self.out(ctx))  # broadcasts (G, d) + (B, G|1, d)
            if h.shape[1] == 1:
                h = h.expand(-1, genes.shape[-2], -1)
            return h + self.ff(h) if self.ff is not None else h

    class GeneReadout(nn.Module):
        """Gene-specific linear read-out: y_g = <h_g, w_g> + b_g."""

        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(d)
            self.weight = nn.Parameter(torch.randn(n_genes, d) * d**-0.5)
            self.bias = nn.Parameter(torch.zeros(n_genes))

        def forward(self, h):
            return (self.norm(h) * self.weight).sum(-1) + self.bias

    class DKAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.semantic = p["gene_queries"] == "semantic"
            if self.semantic:
                self.register_buffer("gene_text", torch.as_tensor(gene_text, dtype=torch.float32))
                self.gene_in = nn.Linear(self.gene_text.shape[1], d)
            else:
                self.gene_free = nn.Parameter(torch.randn(n_genes, d) * 0.02)
            self.gene_encoder = encoder(int(p["gene_layers"]))
            self.standardize = input_norm(p["input_norm"], feat_dim)  # shared by the three scales
            self.local_proj = nn.Sequential(self.standardize, nn.Linear(feat_dim, d))
            self.neigh_proj = nn.Sequential(self.standardize, nn.Linear(feat_dim, d))
            self.neigh_pos = nn.Parameter(torch.zeros(tiles, d))
            self.global_proj = nn.Sequential(self.standardize, nn.Linear(feat_dim, d))
            self.global_encoder = encoder(int(p["global_layers"])) if int(p["global_layers"]) > 0 else None
            self.scale_embed = nn.Parameter(torch.zeros(3, d))
            # per-scale blocks without feed-forward: B x G tokens per block make the FFNs the main cost
            self.scale_blocks = nn.ModuleList([CrossBlock(feed_forward=False) for _ in SCALES])
            self.fusion = CrossBlock()
            self.scale_readouts = nn.ModuleList([GeneReadout() for _ in SCALES])
            self.readout = GeneReadout()
            # expression path (training only)
            self.value_mlp = nn.Sequential(nn.Linear(1, d), nn.GELU(), nn.Linear(d, d))
            self.expr_block = CrossBlock()
            self.img_clip = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, int(p["clip_dim"])))
            self.expr_clip = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, int(p["clip_dim"])))

        def gene_tokens(self):
            g = self.gene_in(self.gene_text) if self.semantic else self.gene_free
            return self.gene_encoder(g[None])[0]  # (G, d)

        def section_global(self, batch: Batch):
            """Global token of every spot in the batch: its place in a transformer over its whole section."""
            out = []
            for sec, rows in section_groups(batch):
                tokens = self.global_proj(sec.local) + sinusoidal_2d(sec.coords, d)
                if self.global_encoder is not None:
                    tokens = self.global_encoder(tokens[None])[0]
                out.append(tokens[rows])
            return torch.cat(out)

        def image_tokens(self, batch: Batch):
            local = self.local_proj(batch.local)[:, None] + self.scale_embed[0]
            neigh = self.neigh_proj(batch.neighbour) + self.neigh_pos + self.scale_embed[1]
            mask = ~batch.neighbour_mask  # True = padding
            mask = mask & ~mask.all(1, keepdim=True)  # a spot with no tile in the image attends to the zeros
            glob = self.section_global(batch)[:, None] + self.scale_embed[2]
            return local, neigh, mask, glob

        def image_path(self, batch: Batch, genes=None):
            genes = self.gene_tokens() if genes is None else genes
            local, neigh, mask, glob = self.image_tokens(batch)
            per_scale = [self.scale_blocks[0](genes, local), self.scale_blocks[1](genes, neigh, mask),
                         self.scale_blocks[2](genes, glob)]
            keep = torch.zeros(mask.shape[0], 1, dtype=torch.bool, device=mask.device)
            fused = self.fusion(genes, torch.cat([local, neigh, glob], 1), torch.cat([keep, mask, keep], 1))
            return fused, per_scale

        def forward(self, batch: Batch):
            fused, _ = self.image_path(batch)
            return self.readout(fused)

        def forward_train(self, batch: Batch):
            genes = self.gene_tokens()
            fused, per_scale = self.image_path(batch, genes)
            expr_tokens = genes[None] + self.value_mlp(batch.targets[..., None])
            expr = self.expr_block(genes, expr_tokens)
            # CLIP on what each path adds to the gene queries (the queries themselves are the same for every spot)
            return {"pred": self.readout(fused),
                    "scale_preds": [r(h) for r, h in zip(self.scale_readouts, per_scale)],
                    "img_embed": self.img_clip((fused - genes).mean(1)),
                    "expr_embed": self.expr_clip((expr - genes).mean(1))}

    return DKAN()


class DKANHead(TorchHead):
    """Gene-semantic dual-path head. ``gene_embeddings``: the ``.npz`` from ``genedml gene-semantics``
    (the pipeline fills it in); without it the genes' symbols are embedded on the fly."""

    kind = "dkan"
    defaults = {
        "dim": 256, "heads": 4, "ff_mult": 2, "dropout": 0.1, "gene_layers": 1, "global_layers": 1,
        "clip_dim": 128, "tau": 0.1, "distill_lambda": 0.3, "loss_weights": "adaptive", "clip_weight": 1.0,
        "gene_queries": "semantic", "gene_embeddings": None, "input_norm": "standard",
        # published: Adam 1e-4, StepLR(50, 0.9), batch 128
        "lr": 1e-4, "step_size": 50, "gamma": 0.9, "batch_size": 128, "epochs": 200, "patience": 20,
        "eval_batch_size": 256,
    }

    def __init__(self, params: dict, seed: int = 0):
        super().__init__(params, seed)
        if self.params["gene_queries"] not in ("semantic", "learned"):
            raise ValueError(f"dkan gene_queries must be 'semantic' or 'learned', not {self.params['gene_queries']!r}")
        if int(self.params["dim"]) % int(self.params["heads"]):
            raise ValueError(f"dkan dim ({self.params['dim']}) must be a multiple of heads ({self.params['heads']})")
        if self.params["loss_weights"] not in ("adaptive", "fixed"):
            raise ValueError(f"dkan loss_weights must be 'adaptive' or 'fixed', not {self.params['loss_weights']!r}")
        self.gene_text = None
        check_input_norm(self.params["input_norm"])
        self.semantics_meta: dict = {}

    def _load_gene_text(self, genes: list[str]) -> None:
        from genedml.study.gene_semantics import BUNDLED_MODEL, embed_texts, read_gene_semantics

        path = self.params.get("gene_embeddings")
        if path:
            self.gene_text, self.semantics_meta = read_gene_semantics(path, genes)
            self.semantics_meta = {**self.semantics_meta, "file": str(path)}
        else:
            log.info("no gene_embeddings file given: embedding the %d gene symbols now", len(genes))
            self.gene_text = embed_texts(list(genes), BUNDLED_MODEL)
            self.semantics_meta = {"model": BUNDLED_MODEL, "texts": "symbols", "file": None}

    def fit(self, train, val, test=None) -> dict:
        if self.params["gene_queries"] == "semantic":
            self._load_gene_text(train[0].genes)
        facts = super().fit(train, val, test)
        return {**facts, "gene_semantics": self.semantics_meta or {"queries": "learned"}}

    def build_model(self, dims: dict):
        import torch

        if self.params["gene_queries"] == "semantic":
            if self.gene_text is not None:
                dims["gene_text_dim"] = int(self.gene_text.shape[1])
                text = self.gene_text
            else:  # loading a saved model: the buffer is filled from the state dict
                text = torch.zeros(dims["n_genes"], dims["gene_text_dim"])
        else:
            text = None
        return build_dkan(dims, self.params, text)

    def init_model(self, model, train) -> None:
        """Input statistics from the training spots; read-outs start at their mean expression (short runs
        then refine a mean predictor)."""
        import torch

        fit_input_norm(model.standardize, torch.cat([st.local for st in train]))
        mean = torch.cat([st.targets for st in train]).mean(0)
        with torch.no_grad():
            for readout in [model.readout, *model.scale_readouts]:
                readout.bias.copy_(mean.to(readout.bias.device))

    def loss(self, model, batch: Batch, epoch: int):
        import torch

        out = model.forward_train(batch)
        y = batch.targets
        sup, mse, distill = distilled_mse(out["pred"].float(), [s.float() for s in out["scale_preds"]], y,
                                          float(self.params["distill_lambda"]))
        if batch.local.shape[0] > 1:
            clip = clip_loss(out["img_embed"], out["expr_embed"], float(self.params["tau"]))
        else:  # one spot has no negatives
            clip = sup * 0
        if self.params["loss_weights"] == "adaptive" and batch.local.shape[0] > 1:
            w = inverse_loss_weights([sup, clip])
        else:
            w = torch.tensor([1.0, float(self.params["clip_weight"])], device=sup.device)
        total = w[0] * sup + w[1] * clip
        return total, {"mse": float(mse.detach()), "distill": float(distill.detach()), "clip": float(clip.detach()),
                       "w_sup": float(w[0]), "w_clip": float(w[1])}


__all__ = ["DKANHead", "clip_loss", "distilled_mse", "inverse_loss_weights"]
