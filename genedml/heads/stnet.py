"""ST-Net-style head: an MLP on the spot's local embedding, trained with MSE.

ST-Net fine-tunes a DenseNet-121 on the spot image; here the encoder stays frozen (the cached embedding),
so this is the linear-probe / MLP form of ST-Net. ``hidden: 0`` gives a linear layer.
"""

from __future__ import annotations

from .torch_head import Batch, TorchHead


class STNetHead(TorchHead):
    kind = "stnet"
    defaults = {"hidden": 512, "dropout": 0.1, "epochs": 100, "patience": 15}

    def build_model(self, dims: dict):
        import torch.nn as nn

        hidden = int(self.params["hidden"])
        if hidden <= 0:
            net = nn.Linear(dims["local_dim"], dims["n_genes"])
        else:
            net = nn.Sequential(nn.LayerNorm(dims["local_dim"]), nn.Linear(dims["local_dim"], hidden), nn.GELU(),
                                nn.Dropout(float(self.params["dropout"])), nn.Linear(hidden, dims["n_genes"]))

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, batch: Batch):
                return self.net(batch.local)

        return Model()

    def loss(self, model, batch: Batch, epoch: int):
        import torch.nn.functional as F

        loss = F.mse_loss(model(batch).float(), batch.targets)
        return loss, {"mse": float(loss.detach())}
