"""DKAN head (Zhang et al., Dual-Path Knowledge-Augmented Contrastive Alignment Network): gene-semantic
queries over image and expression features.

Settings resolve in layers (``genedml.heads.presets``, DKAN section): training defaults < model defaults
< ``size`` < ``variant`` < the head's own keys. The default, ``size: published`` + ``variant: full``, is
DKAN's method at its published size, taken from the public code (coffeeNtv/DKAN, HER2ST config) where
the paper is silent: emb 1024, a 3-layer text transformer, gene-level NT-Xent between the image-text and
the expression-text embeddings of every (spot, gene) pair (``tau`` 0.1; 0.08 for cSCC), one shared
``Linear(emb, 1)`` read-out for every gene, four self-distilled image-only intermediate predictions, the
adaptive (normalised inverse loss) weights, Adam 1e-4 + StepLR(50, 0.9), batch 128. ``size: small`` is
the CPU size (the demo's); ``size: legacy`` + ``variant: legacy`` is the head before this (spot-level CLIP,
per-gene read-outs). Variants ``no_text_summary``, ``no_contrastive``, ``no_knowledge`` are DKAN's Table 3
rows.

- **Losses.** ``MSE(final, y) + sum_s [(1 - lambda) MSE(pred_s, y) + lambda MSE(pred_s, stopgrad(final))]``
  over the intermediates s, plus the contrastive term (``contrast``), balanced by normalised inverse
  loss values ``w_i = (c_i / L_i) / sum_j (c_j / L_j)`` on the detached batch losses (``c`` = 1 and
  ``contrast_boost``; the paper: 1, the code: 3); ``loss_weights: fixed`` uses
  ``L_sup + clip_weight * L_contrast``.

Not reproduced (docs/method.md): the paper's gene texts (GPT-4o summaries of NCBI descriptions embedded
with BioBERT, 1024-d) unless the user supplies them (``gene_semantics.embeddings``: DKAN's published
embedding files). The patch level is the frozen cached embedding with a trainable projection unless
``spot_encoder: resnet18``, DKAN's trainable ResNet-18 over the spot image (pooled feature map).
"""

from __future__ import annotations

import logging

from genedml.heads import presets
from genedml.heads.base import section_settings
from genedml.heads.inputs import (
    check_input_norm,
    check_spot_encoder,
    fit_input_norm,
    init_spot_encoder,
    set_output_bias,
    training_locals,
)
from genedml.heads.torch_head import TRAIN_DEFAULTS, Batch, TorchHead

log = logging.getLogger(__name__)


_CHOICES = {
    "gene_queries": ("semantic", "learned"),
    "gene_text": ("file", "symbols"),
    "contrast": ("gene_nt_xent", "spot_clip", "none"),
    "readout": ("shared", "per_gene"),
    "intermediates": ("image", "scales"),
    "loss_weights": ("adaptive", "fixed"),
}


class DKANHead(TorchHead):
    """Gene-semantic dual-path head. ``gene_embeddings``: the ``.npz`` from ``genedml gene-semantics``
    (the pipeline fills it in); without it (or with ``gene_text: symbols``) the genes' symbols are embedded
    on the fly with the bundled sentence model."""

    kind = "dkan"
    defaults = presets.DKAN_MODEL_DEFAULTS  # sizes and variants: presets.DKAN_SIZES / DKAN_VARIANTS

    @classmethod
    def settings(cls, params: dict | None) -> dict:
        """Resolved in layers (``genedml.heads.presets.resolve``), then checked."""
        s = presets.resolve("dkan", {**cls.COMMON, **TRAIN_DEFAULTS}, section_settings(cls.kind, params))
        for key, allowed in _CHOICES.items():
            if s[key] not in allowed:
                raise ValueError(f"dkan {key} must be one of {', '.join(allowed)}, not {s[key]!r}")
        if int(s["dim"]) % int(s["heads"]):
            raise ValueError(f"dkan dim ({s['dim']}) must be a multiple of heads ({s['heads']})")
        if not s["knowledge_path"] and (s["contrast"] != "none" or s["intermediates"] != "image"):
            raise ValueError(
                "dkan knowledge_path: false has no gene queries, so contrast must be none and intermediates "
                "image (variant no_knowledge)"
            )
        check_input_norm(s["input_norm"])
        check_spot_encoder(s)
        return s

    def __init__(self, params: dict, seed: int = 0):
        super().__init__(params, seed)
        self.gene_text = None
        self.semantics_meta: dict = {}

    @property
    def uses_text(self) -> bool:
        return bool(self.params["knowledge_path"]) and self.params["gene_queries"] == "semantic"

    def _load_gene_text(self, genes: list[str]) -> None:
        from genedml.study.gene_semantics import BUNDLED_MODEL, embed_texts, read_gene_semantics

        path = self.params["gene_embeddings"]
        if path and self.params["gene_text"] == "file":
            self.gene_text, self.semantics_meta = read_gene_semantics(path, genes)
            self.semantics_meta = {**self.semantics_meta, "file": str(path)}
        else:
            log.info("embedding the %d gene symbols now (gene_text %s)", len(genes), self.params["gene_text"])
            self.gene_text = embed_texts(list(genes), BUNDLED_MODEL)
            self.semantics_meta = {"model": BUNDLED_MODEL, "texts": "symbols", "file": None}

    def fit(self, train, val) -> dict:
        if self.uses_text:
            self._load_gene_text(train[0].genes)
        facts = super().fit(train, val)
        if not self.params["knowledge_path"]:
            return {**facts, "gene_semantics": {"queries": "none"}}
        return {**facts, "gene_semantics": self.semantics_meta or {"queries": "learned"}}

    def build_model(self, dims: dict):
        import torch

        from genedml.networks.dkan_net import DKAN

        text = None
        if self.uses_text:
            if self.gene_text is not None:
                dims["gene_text_dim"] = int(self.gene_text.shape[1])
                text = self.gene_text
            else:  # loading a saved model: the buffer is filled from the state dict
                text = torch.zeros(dims["n_genes"], dims["gene_text_dim"])
        return DKAN(self.params, dims, text)

    def init_model(self, model, train) -> None:
        """Input statistics from the training spots; read-outs start at the mean expression (per gene, or
        over all genes for the shared read-out), so short runs refine a mean predictor."""
        import torch

        fit_input_norm(model.standardize, training_locals(train))
        if model.spot is not None:
            self.spot_facts = init_spot_encoder(model.spot, self.params)
        shared, per_gene = model.output_layers()
        for layer in per_gene:
            set_output_bias(layer, train)
        if shared is not None:
            with torch.no_grad():
                shared.bias.fill_(float(torch.cat([st.targets for st in train]).mean()))

    def loss(self, model, batch: Batch, epoch: int):
        import torch

        from genedml.networks.losses import (
            distilled_mse,
            gene_level_nt_xent,
            inverse_loss_weights,
            normalised_clip_loss,
        )

        out = model.forward_train(batch)
        y = batch.targets
        sup, mse, distill = distilled_mse(
            out["pred"].float(), [p.float() for p in out["intermediates"]], y, float(self.params["distill_lambda"])
        )
        contrast, tau = self.params["contrast"], float(self.params["tau"])
        active = contrast == "gene_nt_xent" or (contrast == "spot_clip" and batch.local.shape[0] > 1)
        if contrast == "gene_nt_xent":
            cont = gene_level_nt_xent(out["img_embed"], out["expr_embed"], tau)
        elif active:
            cont = normalised_clip_loss(out["img_embed"], out["expr_embed"], tau)
        else:  # no contrastive path, or one spot without negatives
            cont = sup * 0
        if not active or contrast == "none":
            w = torch.tensor([1.0, 0.0 if contrast == "none" else float(self.params["clip_weight"])], device=sup.device)
        elif self.params["loss_weights"] == "adaptive":
            w = inverse_loss_weights([sup, cont], boost=[1.0, float(self.params["contrast_boost"])])
        else:
            w = torch.tensor([1.0, float(self.params["clip_weight"])], device=sup.device)
        total = w[0] * sup + w[1] * cont
        return total, {
            "mse": float(mse.detach()),
            "distill": float(distill.detach()),
            "clip": float(cont.detach()),
            "w_sup": float(w[0]),
            "w_clip": float(w[1]),
        }


__all__ = ["DKANHead"]
