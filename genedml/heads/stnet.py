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

from genedml.heads.inputs import (batch_views, check_input_norm, check_views, fit_input_norm, input_norm,
                          training_views)
from genedml.heads.torch_head import Batch, TorchHead


def hidden_widths(hidden) -> list[int]:
    if hidden is None:
        return []
    widths = [int(h) for h in hidden] if isinstance(hidden, (list, tuple)) else [int(hidden)]
    if any(w < 0 for w in widths):
        raise ValueError(f"stnet hidden widths must be >= 0, got {hidden!r}")
    return [w for w in widths if w > 0]


class STNetHead(TorchHead):
    kind = "stnet"
    defaults = {"hidden": 512, "dropout": 0.1, "features": ["local"], "input_norm": "layer", "epochs": 100,
                "patience": 15}

    def __init__(self, params: dict, seed: int = 0):
        super().__init__(params, seed)
        self.views = check_views(self.params["features"])
        self.widths = hidden_widths(self.params["hidden"])
        check_input_norm(self.params["input_norm"])

    def build_model(self, dims: dict):
        import torch.nn as nn

        views, drop = self.views, float(self.params["dropout"])
        width = dims["local_dim"] * len(views)
        layers = [input_norm(self.params["input_norm"], width)]
        for i, w in enumerate(self.widths):
            layers += ([nn.LayerNorm(width)] if i else []) + [nn.Linear(width, w), nn.GELU(), nn.Dropout(drop)]
            width = w
        layers.append(nn.Linear(width, dims["n_genes"]))

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(*layers)

            def forward(self, batch: Batch):
                return self.net(batch_views(batch, views))

        return Model()

    def init_model(self, model, train) -> None:
        """Input statistics from the training spots; the output layer starts at their mean expression."""
        import torch

        fit_input_norm(model.net[0], training_views(train, self.views))
        with torch.no_grad():
            model.net[-1].bias.copy_(torch.cat([st.targets for st in train]).mean(0).to(model.net[-1].bias.device))

    def loss(self, model, batch: Batch, epoch: int):
        import torch.nn.functional as F

        loss = F.mse_loss(model(batch).float(), batch.targets)
        return loss, {"mse": float(loss.detach())}
