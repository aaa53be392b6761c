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

from genedml.heads.inputs import batch_views, check_input_norm, check_views, fit_input_norm
from genedml.heads.torch_head import Batch, TorchHead, training_views

log = logging.getLogger(__name__)


class BLEEPHead(TorchHead):
    """The network (``genedml.networks.bleep_net.BLEEP``) sees the concatenated feature views of a batch."""

    kind = "bleep"
    defaults = {
        "dim": 256,
        "dropout": 0.1,
        "temperature": 1.0,
        "normalize": False,
        "k": 50,
        "aggregate": "mean",
        "reference": "train",
        "features": ["local"],
        "input_norm": "standard",
        "lr": 1e-3,
        "weight_decay": 1e-3,
        "batch_size": 256,
        "epochs": 150,
        "patience": 20,
    }

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
        from genedml.networks.bleep_net import BLEEP

        p = self.params
        return BLEEP(
            dims["local_dim"] * len(self.views),
            dims["n_genes"],
            int(p["dim"]),
            float(p["dropout"]),
            p["input_norm"],
            int(p["k"]),
            p["aggregate"],
            float(p["temperature"]),
            int(dims.get("n_reference", 0)),
        )

    def init_model(self, model, train) -> None:
        fit_input_norm(model.standardize, training_views(train, self.views))

    def predict_batch(self, model, batch: Batch):
        return model(batch_views(batch, self.views))

    def loss(self, model, batch: Batch, epoch: int):
        from genedml.networks.losses import bleep_loss

        image = model.embed_image(batch_views(batch, self.views))
        loss = bleep_loss(
            image, model.expression(batch.targets), float(self.params["temperature"]), bool(self.params["normalize"])
        )
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

    def fit(self, train, val) -> dict:
        import torch

        device = self.device()
        self._reference_targets = [torch.as_tensor(s.targets, dtype=torch.float32, device=device) for s in train]
        facts = super().fit(train, val)
        if self.params["reference"] == "train_val" and self.params["protocol"] == "honest":
            # the selection sections are the test fold under the reference protocol: never a reference
            self._reference_targets += [torch.as_tensor(s.targets, dtype=torch.float32, device=device) for s in val]
        self.set_reference(self._reference_targets)
        self._reference_targets = []
        return {**facts, "reference_spots": self.dims["n_reference"]}


__all__ = ["BLEEPHead"]
