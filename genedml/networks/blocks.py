"""Transformer building blocks shared by the neighbour, global and fusion encoders.

Pre-norm layers (LayerNorm -> attention -> residual, LayerNorm -> MLP -> residual), as in TRIPLEX and the
Gene-DML code. Attention goes through ``scaled_dot_product_attention`` so the GPU picks a fused kernel;
an additive float mask carries both the learned relative-position bias and the key mask.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x):
        return self.net(x)


def relative_offset_index(rows: int, cols: int) -> torch.Tensor:
    """(T, T) index of the (|d_row|, |d_col|) offset between every pair of cells of a row-major grid."""
    cells = list(itertools.product(range(rows), range(cols)))
    idx = [abs(a[0] - b[0]) * cols + abs(a[1] - b[1]) for a in cells for b in cells]
    return torch.tensor(idx, dtype=torch.long).view(len(cells), len(cells))


def safe_key_mask(key_mask: torch.Tensor | None) -> torch.Tensor | None:
    """A key mask (True = attend) in which a row with no valid key attends to every key instead of
    producing NaNs (only for a spot whose every neighbour tile is outside the image)."""
    if key_mask is None:
        return None
    return key_mask | ~key_mask.any(-1, keepdim=True)


class Attention(nn.Module):
    """Multi-head attention; ``grid=(r, c)`` adds a learned bias per head and relative grid offset."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, grid: tuple[int, int] | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))
        self.grid = grid
        if grid is not None:
            self.rel_bias = nn.Parameter(torch.zeros(heads, grid[0] * grid[1]))
            self.register_buffer("rel_index", relative_offset_index(*grid), persistent=False)

    def _split(self, t):
        b, n, d = t.shape
        return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x, context=None, key_mask=None):
        """x (B, Tq, D) queries; context (B, Tk, D) keys/values (default x); key_mask (B, Tk) True = attend."""
        context = x if context is None else context
        q = self._split(self.q(x))
        k, v = (self._split(t) for t in self.kv(context).chunk(2, dim=-1))
        bias = None
        if self.grid is not None:
            bias = self.rel_bias[:, self.rel_index].unsqueeze(0).to(q.dtype)  # (1, H, T, T)
        if key_mask is not None:
            masked = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device)
            masked = masked.masked_fill(~safe_key_mask(key_mask), float("-inf"))[:, None, None, :]
            bias = masked if bias is None else bias + masked
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        b, h, n, d = out.shape
        return self.out(out.transpose(1, 2).reshape(b, n, h * d))


class TransformerEncoder(nn.Module):
    """``depth`` pre-norm self-attention layers (no final norm; callers add one where the reference does)."""

    def __init__(
        self, dim: int, depth: int, heads: int, mlp: int, dropout: float = 0.0, grid: tuple[int, int] | None = None
    ):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            self.layers.append(
                nn.ModuleList(
                    [
                        nn.LayerNorm(dim),
                        Attention(dim, heads, dropout, grid),
                        nn.LayerNorm(dim),
                        FeedForward(dim, mlp, dropout),
                    ]
                )
            )

    def forward(self, x, key_mask=None):
        for norm1, attn, norm2, ff in self.layers:
            x = x + attn(norm1(x), key_mask=key_mask)
            x = x + ff(norm2(x))
        return x


class CrossEncoder(nn.Module):
    """Pre-norm cross-attention layers: queries attend to a context (TRIPLEX's fusion)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            self.layers.append(
                nn.ModuleList(
                    [
                        nn.LayerNorm(dim),
                        Attention(dim, heads, dropout),
                        nn.LayerNorm(dim),
                        FeedForward(dim, mlp, dropout),
                    ]
                )
            )

    def forward(self, x, context, key_mask=None):
        for norm1, attn, norm2, ff in self.layers:
            x = x + attn(norm1(x), norm1(context), key_mask=key_mask)
            x = x + ff(norm2(x))
        return x
