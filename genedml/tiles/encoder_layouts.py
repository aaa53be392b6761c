"""What some zoo encoders need beyond a plain timm model: output pooling that is not timm's (Virchow2's CLS +
mean of the patch tokens, CONCH v1.5's attentional pooler) and checkpoints whose keys are not timm's
(a transformers Dinov2Model, CONCH v1.5's vision tower). Written for genedml from the architectures'
descriptions (``genedml/tiles/encoder_zoo.py``); imported only when such an encoder is built.
"""

from __future__ import annotations

import re

import torch
from torch import nn


class ClsMeanPool(nn.Module):
    """A timm ViT whose embedding is its CLS token concatenated with the mean of its patch tokens (register
    tokens left out). It has no weights of its own: its state dict is the trunk's, so checkpoints of the
    trunk load into it unchanged. ``forward_features`` gives the tokens, ``forward_head`` pools them."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.num_prefix_tokens = int(trunk.num_prefix_tokens)  # CLS + registers
        self.num_features = 2 * int(trunk.num_features)

    def forward_features(self, x):
        return self.trunk.forward_features(x)

    def forward_head(self, tokens):
        return torch.cat([tokens[:, 0], tokens[:, self.num_prefix_tokens :].mean(dim=1)], dim=-1)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def state_dict(self, *args, **kwargs):
        return self.trunk.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.trunk.load_state_dict(state_dict, strict=strict, assign=assign)


class AttentionalPooler(nn.Module):
    """Multi-head cross-attention from ``n_queries`` learned queries to a token sequence; parameter names
    follow CONCH's checkpoint (query, ln_q, ln_k, to_q, to_kv, to_out)."""

    def __init__(self, dim: int, context_dim: int, heads: int = 8, n_queries: int = 1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"pooler width {dim} is not a multiple of its {heads} heads")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(n_queries, dim))
        self.ln_q = nn.LayerNorm(dim)
        self.ln_k = nn.LayerNorm(context_dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, tokens):  # (B, N, context_dim) -> (B, n_queries, dim)
        b = tokens.shape[0]
        h = self.heads
        q = self.to_q(self.ln_q(self.query)).expand(b, -1, -1)
        k, v = self.to_kv(self.ln_k(tokens)).chunk(2, dim=-1)

        def split(t):  # (B, L, dim) -> (B, heads, L, dim / heads)
            return t.reshape(b, t.shape[1], h, -1).transpose(1, 2)

        out = nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.to_out(out.transpose(1, 2).reshape(b, q.shape[1], -1))


class ConchVisionTower(nn.Module):
    """CONCH v1.5's image encoder: a timm ViT trunk, an attentional pooler over all its output tokens and a
    LayerNorm (768-d). ``forward_features`` gives the trunk's tokens (for the token cache)."""

    def __init__(self, trunk: nn.Module, dim: int = 768, heads: int = 8):
        super().__init__()
        self.trunk = trunk
        self.attn_pool_contrast = AttentionalPooler(dim, int(trunk.num_features), heads=heads, n_queries=1)
        self.ln_contrast = nn.LayerNorm(dim)
        self.num_features = dim

    def forward_features(self, x):
        return self.trunk.forward_features(x)

    def forward_head(self, tokens):
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def build_pooled(card, trunk: nn.Module) -> nn.Module:
    """The model ``Encoder.model`` holds: the trunk itself when timm's pooled output is the card's
    embedding, else the trunk wrapped in the card's pooling."""
    if card.pooling in ("cls", "avg"):
        return trunk
    if card.pooling == "cls+mean":
        return ClsMeanPool(trunk)
    if card.pooling == "attn-pool":
        return ConchVisionTower(trunk)
    raise ValueError(f"encoder {card.name!r}: unknown pooling {card.pooling!r}")


# ------------------------------------------------------------------------------------------ checkpoints


def resample_pos_embed(state: dict, key: str, model_pos: torch.Tensor, prefix_tokens: int) -> None:
    """Resample ``state[key]`` (absolute position embeddings) to the model's grid when they differ."""
    if key not in state or tuple(state[key].shape) == tuple(model_pos.shape):
        return
    from genedml.compat import import_timm

    import_timm()
    from timm.layers import resample_abs_pos_embed

    n_model = model_pos.shape[1] - prefix_tokens
    side = int(round(n_model**0.5))
    state[key] = resample_abs_pos_embed(
        state[key].float(), new_size=[side, side], num_prefix_tokens=prefix_tokens, antialias=False
    ).to(state[key].dtype)


def _pos_prefix(trunk) -> int:
    """Prefix tokens that carry a position embedding (0 when timm adds them without one)."""
    return 0 if getattr(trunk, "no_embed_class", False) else int(getattr(trunk, "num_prefix_tokens", 1))


def convert_conch(state: dict, model: nn.Module) -> dict:
    """CONCH v1.5's vision checkpoint has the tower's own names; only its position embeddings may need
    resampling to the model's input size."""
    state = dict(state)
    resample_pos_embed(state, "trunk.pos_embed", model.trunk.pos_embed, _pos_prefix(model.trunk))
    return state


_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
# transformers Dinov2 layer names -> timm Block names (both transformers 4 and 5 spellings)
_HF_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
}
_HF_QKV = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_DROPPED = ("embeddings.mask_token",)  # used only in training (masked image modelling)


def is_transformers_dinov2(state: dict) -> bool:
    return any(k.startswith(("embeddings.", "encoder.layer.", "dinov2.embeddings.")) for k in state)


def dinov2_transformers_to_timm(state: dict) -> dict:
    """A transformers Dinov2Model state dict in timm VisionTransformer names. Keys it does not know are
    kept as they are, so the strict load names them as unexpected."""
    if any(k.startswith("dinov2.") for k in state):  # saved from a model with a head
        state = {k[len("dinov2.") :]: v for k, v in state.items() if k.startswith("dinov2.")}
    out: dict = {}
    qkv: dict = {}
    for key, value in state.items():
        if key in _HF_DROPPED:
            continue
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        m = _HF_LAYER.match(key)
        if m is None:
            out[key] = value
            continue
        i, rest = m.group(1), m.group(2)
        module, _, param = rest.rpartition(".")
        if module in _HF_QKV:
            qkv.setdefault((i, param), {})[_HF_QKV[module]] = value
        elif module in _HF_BLOCK:
            out[f"blocks.{i}.{_HF_BLOCK[module]}.{param}"] = value
        elif rest in _HF_BLOCK:  # layer-scale: the parameter is the module's only one
            out[f"blocks.{i}.{_HF_BLOCK[rest]}"] = value
        else:
            out[key] = value
    for (i, param), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            for name, value in parts.items():  # incomplete: leave for the strict load to report
                out[f"encoder.layer.{i}.attention.{name}.{param}"] = value
            continue
        out[f"blocks.{i}.attn.qkv.{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def convert_dinov2(state: dict, model: nn.Module) -> dict:
    """Phikon-v2: a transformers Dinov2Model file converted to timm names (a timm-named file passes as it
    is); position embeddings resampled to the model's grid when they differ."""
    state = dinov2_transformers_to_timm(state) if is_transformers_dinov2(state) else dict(state)
    resample_pos_embed(state, "pos_embed", model.pos_embed, _pos_prefix(model))
    return state


CONVERTERS = {"conch-vision": convert_conch, "transformers-dinov2": convert_dinov2}
