"""The neighbour and global encoders of the image pathway (TRIPLEX's, reused by Gene-DML).

- ``NeighbourEncoder``: a transformer over the spot's 5 x 5 neighbour tiles with a learned bias per
  relative grid offset (|d_row|, |d_col|) and key masking of tiles outside the image, then LayerNorm.
- ``GlobalEncoder``: one transformer layer over all spots of a section, a 3 x 3 depthwise convolution on
  the spots' array-coordinate grid (a positional encoding generator, PEG), ``depth - 1`` more layers and
  LayerNorm. The section's spots are scattered onto a dense grid for the convolution and gathered back in
  their own order, so the output follows the input order for any order of spots.
"""

from __future__ import annotations

import logging

import numpy as np
from torch import nn

from genedml.networks.blocks import TransformerEncoder

log = logging.getLogger(__name__)

MAX_GRID_CELLS = 4_000_000  # a dense grid larger than this means the coordinates are not array indices


class NeighbourEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp: int, dropout: float = 0.0, grid: int = 5):
        super().__init__()
        self.grid = grid
        self.layers = TransformerEncoder(dim, depth, heads, mlp, dropout, grid=(grid, grid))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tiles, mask=None):
        """tiles (B, grid*grid, D); mask (B, grid*grid) True where the tile lies in the image."""
        if tiles.shape[1] != self.grid * self.grid:
            raise ValueError(f"expected {self.grid * self.grid} neighbour tiles, got {tiles.shape[1]}")
        return self.norm(self.layers(tiles, key_mask=mask))


class GridConv(nn.Module):
    """Depthwise convolution over spots placed on their (row, col) grid; residual, occupied cells only."""

    def __init__(self, dim: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=True)

    def forward(self, x, coords):
        """x (N, D) spots of one section; coords (N, 2) long array (row, col)."""
        pos = coords - coords.min(0).values
        h, w = int(pos[:, 0].max()) + 1, int(pos[:, 1].max()) + 1
        if h * w > MAX_GRID_CELLS:
            raise ValueError(f"array coordinates span a {h} x {w} grid; expected spot grid indices, not pixels")
        dense = x.new_zeros(h, w, x.shape[1])
        dense = dense.index_put((pos[:, 0], pos[:, 1]), x, accumulate=True)
        conv = self.conv(dense.permute(2, 0, 1).unsqueeze(0))[0]  # (D, h, w)
        return x + conv[:, pos[:, 0], pos[:, 1]].T


class GlobalEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp: int, dropout: float = 0.0, kernel: int = 3):
        super().__init__()
        if depth < 1:
            raise ValueError("the global encoder needs depth >= 1")
        self.first = TransformerEncoder(dim, 1, heads, mlp, dropout)
        self.peg = GridConv(dim, kernel)
        self.rest = TransformerEncoder(dim, depth - 1, heads, mlp, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, coords):
        """x (N, D) local embeddings of all spots of one section; coords (N, 2) -> (N, D)."""
        x = self.first(x.unsqueeze(0))[0]
        x = self.peg(x, coords)
        return self.norm(self.rest(x.unsqueeze(0))[0])


def grid_positions(array_coords: np.ndarray, spatial: np.ndarray, sample: str = "") -> np.ndarray:
    """Integer (row, col) grid positions of a section's spots for the global encoder.

    The sample's array coordinates when they are valid (non-negative, one spot per cell); otherwise
    positions derived from the pixel centres on a grid of the median nearest-spot distance.
    """
    coords = np.asarray(array_coords)
    n = len(coords)
    if n and coords.min() >= 0 and len(np.unique(coords, axis=0)) == n:
        return coords.astype(np.int64)
    xy = np.asarray(spatial, dtype=float)[:, :2]
    if n < 2:
        return np.zeros((n, 2), dtype=np.int64)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    pitch = float(np.median(d[:, 1])) or 1.0
    log.warning(
        "%s: array coordinates missing or not one spot per cell; using a grid of the spot pitch "
        "(%.1f px) from the pixel centres for the global encoder",
        sample or "section",
        pitch,
    )
    return np.round((xy[:, ::-1] - xy[:, ::-1].min(0)) / pitch).astype(np.int64)
