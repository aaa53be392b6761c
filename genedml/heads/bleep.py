"""BLEEP-style head: a joint image-expression embedding, prediction by nearest training spots.

Training (BLEEP, Xie et al. 2023): an image projection (of the cached spot embedding, optionally with
neighbour/global views) and an expression projection (of the spot's target vector) map into one
``dim``-d space; the loss is BLEEP's CLIP variant with soft targets:
``logits = E_x E_i^T / T``, ``targets = softmax((E_i E_i^T + E_x E_x^T) / 2 / T)``,
``L = (CE(logits, targets) + CE(logits^T, targets^T)) / 2`` (row-wise soft cross-entropy; ``T`` =
``temperature``, BLEEP uses 1.0 on un-normalised embeddings; ``normalize: true`` L2-normalises first).
Projection heads as BLEEP's: Linear -> GELU -> Linear -> dropout, residual to the first Linear, LayerNorm;
the image features are first normalised (``input_norm``: ``standard`` = per-feature training statistics,
default; ``layer``; ``none`` as BLEEP, whose CNN features feed the projection directly).

Prediction: the expression embeddings of every **training** spot form the reference set, stored with the
model (``model.pt``). A query spot's image embedding is compared (cosine) with all of them and the
prediction is the mean expression of the ``k`` nearest (``aggregate: mean``; ``weighted`` weighs them by
their similarity's softmax with temperature ``temperature``). During training the reference is rebuilt
before every validation scoring with the current weights; ``reference: train_val`` adds the validation
spots to the final reference after model selection.

BLEEP fine-tunes a ResNet50 image encoder; here the encoder is frozen (cached features), so only the
projections train.
"""

from __future__ import annotations

import logging

from genedml.heads.inputs import (batch_views, check_input_norm, check_views, fit_input_norm, input_norm,
                          training_views)
from genedml.heads.torch_head import Batch, TorchHead

log = logging.getLogger(__name__)


def bleep_loss(img, expr, temperature: float = 1.0, normalize: bool = False):
    """BLEEP's soft-target contrastive loss between paired image and expression embeddings (B, d)."""
    import torch.nn.functional as F

    from genedml.networks.losses import soft_target_loss  # Gene-DML's instance-level loss is BLEEP's

    img, expr = img.float(), expr.float()
    if normalize:
        img, expr = F.normalize(img, dim=-1), F.normalize(expr, dim=-1)
    return soft_target_loss(img, expr, temperature)


def knn_predict(query, keys, values, k: int, aggregate: str = "mean", temperature: float = 1.0):
    """Mean (or similarity-weighted mean) of ``values`` of the ``k`` keys most cosine-similar to each query."""
    import torch
    import torch.nn.functional as F

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


def projection(in_dim: int, dim: int, dropout: float):
    import torch.nn as nn

    class Projection(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(in_dim, dim)
            self.second = nn.Sequential(nn.GELU(), nn.Linear(dim, dim), nn.Dropout(dropout))
            self.norm = nn.LayerNorm(dim)

        def forward(self, x):
            h = self.first(x)
            return self.norm(h + self.second(h))

    return Projection()


class BLEEPHead(TorchHead):
    kind = "bleep"
    defaults = {"dim": 256, "dropout": 0.1, "temperature": 1.0, "normalize": False, "k": 50,
                "aggregate": "mean", "reference": "train", "features": ["local"], "input_norm": "standard",
                "lr": 1e-3, "weight_decay": 1e-3, "batch_size": 256, "epochs": 150, "patience": 20}

    def __init__(self, params: dict, seed: int = 0):
        super().__init__(params, seed)
        self.views = check_views(self.params["features"])
        check_input_norm(self.params["input_norm"])
        if self.params["reference"] not in ("train", "train_val"):
            raise ValueError(f"bleep reference must be 'train' or 'train_val', not {self.params['reference']!r}")
        if self.params["aggregate"] not in ("mean", "weighted"):
            raise ValueError(f"bleep aggregate must be 'mean' or 'weighted', not {self.params['aggregate']!r}")
        self._reference_targets: list = []

    def build_model(self, dims: dict):
        import torch
        import torch.nn as nn

        p, views = self.params, self.views
        img_dim = dims["local_dim"] * len(views)
        temperature, aggregate, k = float(p["temperature"]), p["aggregate"], int(p["k"])

        class BLEEP(nn.Module):
            def __init__(self):
                super().__init__()
                self.standardize = input_norm(p["input_norm"], img_dim)
                self.image = projection(img_dim, int(p["dim"]), float(p["dropout"]))
                self.expression = projection(dims["n_genes"], int(p["dim"]), float(p["dropout"]))
                n_ref = int(dims.get("n_reference", 0))
                self.register_buffer("ref_keys", torch.zeros(n_ref, int(p["dim"])))
                self.register_buffer("ref_values", torch.zeros(n_ref, dims["n_genes"]))

            def embed_image(self, batch: Batch):
                return self.image(self.standardize(batch_views(batch, views)))

            def forward(self, batch: Batch):
                return knn_predict(self.embed_image(batch), self.ref_keys, self.ref_values, k, aggregate, temperature)

        return BLEEP()

    def init_model(self, model, train) -> None:
        fit_input_norm(model.standardize, training_views(train, self.views))

    def loss(self, model, batch: Batch, epoch: int):
        loss = bleep_loss(model.embed_image(batch), model.expression(batch.targets), float(self.params["temperature"]),
                          bool(self.params["normalize"]))
        return loss, {"contrastive": float(loss.detach())}

    # --- the reference set --------------------------------------------------------------------
    def set_reference(self, targets: list) -> None:
        """Embed the given (N_i, G) target tensors with the current expression projection; store them."""
        import torch

        values = torch.cat([t.float() for t in targets])
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():  # not inference_mode: the buffers must stay loadable (load_state_dict copies in place)
            keys = torch.cat([self.model.expression(values[i : i + 4096]) for i in range(0, len(values), 4096)])
        self.model.ref_keys = keys.clone()
        self.model.ref_values = values.clone()
        self.dims["n_reference"] = int(values.shape[0])
        self.model.train(was_training)

    def _score(self, sections):
        self.set_reference(self._reference_targets)
        return super()._score(sections)

    def fit(self, train, val, test=None) -> dict:
        import torch

        device = self.device()
        self._reference_targets = [torch.as_tensor(s.targets, dtype=torch.float32, device=device) for s in train]
        facts = super().fit(train, val, test)
        if self.params["reference"] == "train_val":
            self._reference_targets += [torch.as_tensor(s.targets, dtype=torch.float32, device=device) for s in val]
        self.set_reference(self._reference_targets)
        self._reference_targets = []
        return {**facts, "reference_spots": self.dims["n_reference"]}


__all__ = ["BLEEPHead", "bleep_loss", "knn_predict"]
