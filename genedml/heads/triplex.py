"""TRIPLEX-style head: ``type: triplex``.

Local / neighbour / global fusion trained with MSE plus TRIPLEX's self-distillation terms and no
contrastive loss: the fused prediction's MSE plus, for each scale's own prediction,
``(1 - alpha) * MSE(scale, target) + alpha * MSE(fused, scale)`` (alpha 0.3). Sizes: ``small`` (CPU
default) or TRIPLEX's published configs ``her2st | stnet | cscc``; ``fusion: cross`` (TRIPLEX) or
``self`` (Gene-DML's scale-wise self-attention, which makes this head Gene-DML's ``mse-only`` row plus
distillation). Prediction is the fused output. ``spot_encoder: resnet18`` trains TRIPLEX's ResNet-18 on
the spot images (its 7 x 7 feature map as the local tokens) instead of reading the frozen local embedding.
"""

from __future__ import annotations

from genedml.heads import presets
from genedml.heads.base import section_settings
from genedml.heads.inputs import (
    check_choice,
    check_spot_encoder,
    init_spot_encoder,
    set_output_bias,
    training_locals,
)
from genedml.heads.torch_head import TRAIN_DEFAULTS, Batch, TorchHead


class TriplexHead(TorchHead):
    kind = "triplex"

    @classmethod
    def settings(cls, params: dict | None) -> dict:
        """Resolved in layers (``genedml.heads.presets``), then checked."""
        settings = presets.resolve("triplex", {**cls.COMMON, **TRAIN_DEFAULTS}, section_settings(cls.kind, params))
        for key in ("fusion", "local_input"):
            check_choice(key, settings[key])
        check_spot_encoder(settings)
        return settings

    def build_model(self, dims: dict):
        from genedml.networks.triplex_net import Triplex

        return Triplex(self.params, dims)

    def init_model(self, model, train) -> None:
        for layer in [model.fc, *model.fc_scale.values()]:
            set_output_bias(layer, train)
        model.image.set_input_stats(training_locals(train))
        if model.image.spot is not None:
            self.spot_facts = init_spot_encoder(model.image.spot, self.params)

    def loss(self, model, batch: Batch, epoch: int):
        from genedml.networks.losses import self_distillation_loss

        out = model.outputs(batch)
        fused = out.pop("fused").float()
        total, parts = self_distillation_loss(
            fused, {k: v.float() for k, v in out.items()}, batch.targets, float(self.params["alpha"])
        )
        return total, {k: float(v.detach()) for k, v in parts.items()}
