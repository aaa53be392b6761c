"""ST-Net-style network: an input normalisation, then a linear layer or an MLP, on a spot's feature views.

Hidden layers are Linear -> GELU -> Dropout, with a LayerNorm before every hidden layer after the first;
no hidden width is the linear probe. The input is the (B, D) tensor of the spot's concatenated views
(the head builds it from a batch).
"""

from __future__ import annotations

from torch import nn

from genedml.networks.input_norm import input_norm


class STNet(nn.Module):
    def __init__(self, in_dim: int, n_genes: int, widths: list[int], dropout: float, norm: str):
        super().__init__()
        width = in_dim
        layers = [input_norm(norm, width)]
        for i, w in enumerate(widths):
            layers += ([nn.LayerNorm(width)] if i else []) + [nn.Linear(width, w), nn.GELU(), nn.Dropout(dropout)]
            width = w
        layers.append(nn.Linear(width, n_genes))
        self.net = nn.Sequential(*layers)

    @property
    def norm(self) -> nn.Module:
        return self.net[0]

    @property
    def output(self) -> nn.Linear:
        return self.net[-1]

    def forward(self, x):
        """(B, in_dim) views -> (B, n_genes) predictions."""
        return self.net(x)
