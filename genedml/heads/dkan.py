"""DKAN-style head: gene-semantic queries over image and expression features.

The network (``genedml.networks.dkan_net.DKAN``): gene queries from one text embedding per gene
(``genedml.study.gene_semantics``: a local sentence model over the gene symbol, or over a user-supplied
description; ``gene_queries: learned`` for free per-gene parameters) cross-attend to the spot's image
tokens at three scales (local, 5 x 5 neighbours, a section-level global token) and, in training, to
tokens of the spot's measured expression. Input statistics (``input_norm``) come from the training spots.

- **Losses.** CLIP loss between what each path adds to the gene queries, averaged over genes (symmetric
  InfoNCE over the spots of the batch, temperature ``tau``); supervised
  ``MSE(fused, y) + sum_s [(1 - lambda) MSE(pred_s, y) + lambda MSE(pred_s, stopgrad(fused))]`` over the
  scales s (self-distillation of the intermediate predictions towards the fused one, TRIPLEX's form);
  the two losses are balanced by **normalised inverse loss values**:
  ``w_i = (1 / L_i) / sum_j (1 / L_j)`` computed on the detached batch losses, ``L = sum_i w_i L_i``
  (``loss_weights: fixed`` uses ``L_sup + clip_weight * L_clip`` instead).

Not reproduced (docs/method.md): the paper's gene texts (GPT-4o summaries of NCBI descriptions embedded
with BioBERT, 1024-d) — symbol embeddings carry far less biology, so the semantic prior is weak and the
gene queries act mostly as gene identities; and the paper's trainable ResNet18 patch branch — here the patch
level is the frozen cached embedding with a trainable projection, so nothing adapts the pixels to the task.
"""

from __future__ import annotations

import logging

from genedml.heads.inputs import check_input_norm, fit_input_norm, set_output_bias, training_locals
from genedml.heads.torch_head import Batch, TorchHead

log = logging.getLogger(__name__)


class DKANHead(TorchHead):
    """Gene-semantic dual-path head. ``gene_embeddings``: the ``.npz`` from ``genedml gene-semantics``
    (the pipeline fills it in); without it the genes' symbols are embedded on the fly."""

    kind = "dkan"
    defaults = {
        "dim": 256,
        "heads": 4,
        "ff_mult": 2,
        "dropout": 0.1,
        "gene_layers": 1,
        "global_layers": 1,
        "clip_dim": 128,
        "tau": 0.1,
        "distill_lambda": 0.3,
        "loss_weights": "adaptive",
        "clip_weight": 1.0,
        "gene_queries": "semantic",
        "gene_embeddings": None,
        "input_norm": "standard",
        # published: Adam 1e-4, StepLR(50, 0.9), batch 128
        "lr": 1e-4,
        "step_size": 50,
        "gamma": 0.9,
        "batch_size": 128,
        "epochs": 200,
        "patience": 20,
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

        path = self.params["gene_embeddings"]
        if path:
            self.gene_text, self.semantics_meta = read_gene_semantics(path, genes)
            self.semantics_meta = {**self.semantics_meta, "file": str(path)}
        else:
            log.info("no gene_embeddings file given: embedding the %d gene symbols now", len(genes))
            self.gene_text = embed_texts(list(genes), BUNDLED_MODEL)
            self.semantics_meta = {"model": BUNDLED_MODEL, "texts": "symbols", "file": None}

    def fit(self, train, val) -> dict:
        if self.params["gene_queries"] == "semantic":
            self._load_gene_text(train[0].genes)
        facts = super().fit(train, val)
        return {**facts, "gene_semantics": self.semantics_meta or {"queries": "learned"}}

    def build_model(self, dims: dict):
        import torch

        from genedml.networks.dkan_net import DKAN

        if self.params["gene_queries"] == "semantic":
            if self.gene_text is not None:
                dims["gene_text_dim"] = int(self.gene_text.shape[1])
                text = self.gene_text
            else:  # loading a saved model: the buffer is filled from the state dict
                text = torch.zeros(dims["n_genes"], dims["gene_text_dim"])
        else:
            text = None
        return DKAN(self.params, dims, text)

    def init_model(self, model, train) -> None:
        """Input statistics from the training spots; read-outs start at their mean expression (short runs
        then refine a mean predictor)."""
        fit_input_norm(model.standardize, training_locals(train))
        for readout in [model.readout, *model.scale_readouts]:
            set_output_bias(readout, train)

    def loss(self, model, batch: Batch, epoch: int):
        import torch

        from genedml.networks.losses import distilled_mse, inverse_loss_weights, normalised_clip_loss

        out = model.forward_train(batch)
        y = batch.targets
        sup, mse, distill = distilled_mse(
            out["pred"].float(), [s.float() for s in out["scale_preds"]], y, float(self.params["distill_lambda"])
        )
        if batch.local.shape[0] > 1:
            clip = normalised_clip_loss(out["img_embed"], out["expr_embed"], float(self.params["tau"]))
        else:  # one spot has no negatives
            clip = sup * 0
        if self.params["loss_weights"] == "adaptive" and batch.local.shape[0] > 1:
            w = inverse_loss_weights([sup, clip])
        else:
            w = torch.tensor([1.0, float(self.params["clip_weight"])], device=sup.device)
        total = w[0] * sup + w[1] * clip
        return total, {
            "mse": float(mse.detach()),
            "distill": float(distill.detach()),
            "clip": float(clip.detach()),
            "w_sup": float(w[0]),
            "w_clip": float(w[1]),
        }


__all__ = ["DKANHead"]
