"""ST-Net-style head: a linear layer or an MLP on the spot's embedding, trained with MSE.

ST-Net (He et al. 2020) fine-tunes an ImageNet DenseNet-121 end to end on the spot's image and regresses
the genes' expression with MSE. Here the encoder is frozen (the cached embedding), so this is ST-Net's
linear-probe / MLP form: what the frozen features alone support, with nothing adapted to the pixels.

Parameters: ``hidden`` = 0 (a linear layer, the probe), an integer (one hidden layer, the default 512)
or a list of widths (a deeper MLP); ``dropout``; ``features`` = the per-spot views fed in (default
``[local]`` as ST-Net; ``neighbour_mean`` / ``global_mean`` add context, see ``batch_views``).
``input_norm``: ``layer`` (default, a per-spot LayerNorm), ``standard`` (per-feature training statistics, as
ridge) or ``none``; hidden layers are Linear -> GELU -> Dropout, with a LayerNorm before every hidden layer
after the first.
"""

from __future__ import annotations

from genedml.heads.inputs import (
    batch_views,
    check_input_norm,
    check_views,
    fit_input_norm,
    set_output_bias,
)
from genedml.heads.torch_head import Batch, TorchHead, training_views


def hidden_widths(hidden) -> list[int]:
    if hidden is None:
        return []
    widths = [int(h) for h in hidden] if isinstance(hidden, (list, tuple)) else [int(hidden)]
    if any(w < 0 for w in widths):
        raise ValueError(f"stnet hidden widths must be >= 0, got {hidden!r}")
    return [w for w in widths if w > 0]


class STNetHead(TorchHead):
    """The network (``genedml.networks.stnet_net.STNet``) sees the concatenated feature views of a batch."""

    kind = "stnet"
    defaults = {
        "hidden": 512,
        "dropout": 0.1,
        "features": ["local"],
        "input_norm": "layer",
        "epochs": 100,
        "patience": 15,
    }

    def __init__(self, params: dict, seed: int = 0):
        super().__init__(params, seed)
        self.views = check_views(self.params["features"])
        self.widths = hidden_widths(self.params["hidden"])
        check_input_norm(self.params["input_norm"])

    def build_model(self, dims: dict):
        from genedml.networks.stnet_net import STNet

        return STNet(
            dims["local_dim"] * len(self.views),
            dims["n_genes"],
            self.widths,
            float(self.params["dropout"]),
            self.params["input_norm"],
        )

    def init_model(self, model, train) -> None:
        """Input statistics from the training spots; the output layer starts at their mean expression."""
        fit_input_norm(model.norm, training_views(train, self.views))
        set_output_bias(model.output, train)

    def predict_batch(self, model, batch: Batch):
        return model(batch_views(batch, self.views))

    def loss(self, model, batch: Batch, epoch: int):
        import torch.nn.functional as F

        loss = F.mse_loss(self.predict_batch(model, batch).float(), batch.targets)
        return loss, {"mse": float(loss.detach())}
