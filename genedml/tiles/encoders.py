"""Frozen tile encoders: a registry from a name to a builder that returns the model and how to feed it.

Every name of the encoder zoo (``genedml/tiles/encoder_zoo.py``: ``uni``, ``uni2-h``, ``virchow2``, ...) is
built from its card: the timm architecture with ``pretrained=False``, the card's pooling, normalisation and
width, and weights from a local file (``encoder.weights`` or the card's environment variable,
``GENEDML_UNI_WEIGHTS`` for ``uni``). Any other name is taken as a timm model name, random-init unless a
local weights file is given. Weights are loaded strictly and their SHA-256 is recorded wherever features
are written.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

from genedml.compat import import_timm
from genedml.pipeline import schema
from genedml.pipeline.spec import StageSpec
from genedml.tiles.encoder_zoo import IMAGENET_MEAN, IMAGENET_STD, ZOO, EncoderCard

log = logging.getLogger(__name__)

RANDOM_INIT = "random-init"

UNI_HELP = ZOO["uni"].help()


@dataclass
class Encoder:
    name: str
    model: object  # torch.nn.Module, eval mode, requires_grad False
    embed_dim: int
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto (bf16 on GPU, fp32 on CPU)
    weights_sha256: str = RANDOM_INIT
    weights_path: str | None = None
    info: dict = field(default_factory=dict)
    cache_local_tokens: bool = False  # also store every output token of the local crop (ViT: 197 x D)
    local_views: int = 1  # dihedral views of the local crop encoded per spot (genedml.tiles.views)

    def identity(self) -> dict:
        """What makes this encoder's outputs what they are (for cache fingerprints): the config that built
        it, or else a hash of its parameters."""
        ident = {
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "embed_dim": self.embed_dim,
            "mean": list(self.mean),
            "std": list(self.std),
            "precision": self.precision,
            "local_views": int(self.local_views),
        }
        if "config" in self.info:
            ident["config"] = self.info["config"]
        else:
            digest = hashlib.sha256()
            for key, value in self.model.state_dict().items():
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            ident["parameters_sha256"] = digest.hexdigest()
        return ident


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict_file(path: str | os.PathLike) -> dict:
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_weights(
    model, path: str | os.PathLike, expected_sha256: str | None = None, convert=None, ignore_keys=()
) -> str:
    """Load a local weights file strictly; return its SHA-256 (checked against ``expected_sha256``).

    ``convert(state, model)`` maps a checkpoint of another key layout to the model's names first;
    ``ignore_keys`` are key prefixes dropped before the load (a classifier head the model does not have).
    Any key the model lacks or does not find, or of another shape, is a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights not found: {path}")
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256.lower():
        raise ValueError(f"encoder weights {path}: SHA-256 is {digest}, config expects {expected_sha256}")
    state = load_state_dict_file(path)
    if convert is not None:
        state = convert(state, model)
    if ignore_keys:
        state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore_keys))}
    own = model.state_dict()
    reshaped = [
        f"{k}: file {tuple(v.shape)}, model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing, unexpected = [], []
    if not reshaped:
        missing, unexpected = model.load_state_dict(state, strict=False)
    else:
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
    if missing or unexpected or reshaped:
        raise ValueError(
            f"encoder weights {path} do not match the architecture: "
            f"{len(missing)} missing keys (e.g. {list(missing[:3])}), {len(unexpected)} unexpected "
            f"(e.g. {list(unexpected[:3])}), {len(reshaped)} of another shape (e.g. {reshaped[:2]})"
        )
    return digest


def _freeze(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def uni_kwargs(**overrides) -> dict:
    """timm arguments of UNI v1 (the zoo card's), with ``overrides``."""
    return {**ZOO["uni"].timm_kwargs, **overrides}


def _timm_kwargs(timm, kwargs: dict) -> dict:
    """A card's plain-data timm arguments with a layer class named by a string resolved (``mlp_layer``)."""
    out = dict(kwargs)
    if isinstance(out.get("mlp_layer"), str):
        out["mlp_layer"] = getattr(timm.layers, out["mlp_layer"])
    return out


def zoo_architecture(card: EncoderCard, model_kwargs: dict | None = None, init: bool = True):
    """The card's network, random-init: its timm architecture (``model_kwargs`` override its arguments),
    truncated and pooled as the card says. Its ``num_features`` is the embedding width. ``init=False``
    skips timm's weight initialisation of a ViT (about 2/3 of its build time on a CPU) when a checkpoint
    is about to overwrite every parameter anyway."""
    timm = import_timm()
    from torch import nn

    from genedml.tiles.encoder_layouts import build_pooled

    kwargs = {**card.timm_kwargs, **(model_kwargs or {})}
    if not init and card.timm_name.startswith("vit_"):
        kwargs.setdefault("weight_init", "skip")
    trunk = timm.create_model(card.timm_name, pretrained=False, **_timm_kwargs(timm, kwargs))
    for name in card.drop_modules:  # a truncated network: its width is that of the last stage kept
        setattr(trunk, name, nn.Identity())
        kept = [f for f in trunk.feature_info if f["module"] not in card.drop_modules]
        trunk.num_features = int(kept[-1]["num_chs"])
    return build_pooled(card, trunk)


def build_zoo(
    card: EncoderCard, weights=None, expected_sha256=None, allow_random_init=False, model_kwargs=None, **_
) -> Encoder:
    """A zoo encoder from its card: the card's architecture (``model_kwargs`` override its timm arguments;
    tests use them to run this exact path on a shallow network), pooling, normalisation and width; weights
    from config, else the card's environment variable, loaded strictly (SHA-256 checked when the config or
    the card gives one)."""
    from genedml.tiles.encoder_layouts import CONVERTERS

    weights = weights or os.environ.get(card.env_var) or None
    if weights is None and not allow_random_init:
        raise FileNotFoundError(f"encoder {card.name!r} needs its weights file. " + card.help())
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"{card.title} weights file {weights} does not exist. " + card.help())
    model = zoo_architecture(card, model_kwargs, init=weights is None)
    dim = int(model.num_features)
    if dim != card.embed_dim and not model_kwargs:
        raise RuntimeError(f"encoder {card.name!r} built {dim}-d embeddings, its card says {card.embed_dim}")
    digest = RANDOM_INIT
    if weights is not None:
        digest = load_weights(
            model,
            weights,
            expected_sha256 or card.sha256,
            convert=CONVERTERS.get(card.layout),
            ignore_keys=card.ignore_keys,
        )
    return Encoder(
        card.name,
        _freeze(model),
        dim,
        mean=tuple(card.mean),
        std=tuple(card.std),
        weights_sha256=digest,
        weights_path=None if weights is None else str(weights),
    )


def build_uni(weights=None, expected_sha256=None, allow_random_init=False, model_kwargs=None, **_) -> Encoder:
    """UNI v1: timm ``vit_large_patch16_224`` with UNI's settings; weights from config or GENEDML_UNI_WEIGHTS."""
    return build_zoo(ZOO["uni"], weights, expected_sha256, allow_random_init, model_kwargs)


def build_timm(
    name: str, weights=None, expected_sha256=None, allow_random_init=False, model_kwargs=None, **_
) -> Encoder:
    """Any timm model by name, pooled output (num_classes=0); local weights optional."""
    timm = import_timm()
    if weights is None and not allow_random_init:
        raise FileNotFoundError(
            f"encoder {name!r}: no weights file given (encoder.weights) and allow_random_init is false"
        )
    kwargs = dict(num_classes=0)
    kwargs.update(model_kwargs or {})
    model = timm.create_model(name, pretrained=False, **kwargs)
    digest = RANDOM_INIT if weights is None else load_weights(model, weights, expected_sha256)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return Encoder(
        name,
        _freeze(model),
        model.num_features,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        weights_sha256=digest,
        weights_path=None if weights is None else str(weights),
    )


REGISTRY: dict[str, Callable[..., Encoder]] = {name: partial(build_zoo, card) for name, card in ZOO.items()}
REGISTRY["uni"] = build_uni


# encoder settings that change how fast features are made, never what they are
@dataclass(frozen=True)
class EncoderSpec(StageSpec):
    """What the embed stage encodes with (config ``encoder`` without its run-time knobs, which the schema
    marks ``x-runtime``: they never change the features, so changing them re-embeds nothing)."""

    section: ClassVar[str] = "encoder"
    keys: ClassVar[tuple[str, ...]] = tuple(schema.runtime_split("encoder")[0])

    name: str
    timm_name: str | None
    weights: str | None
    weights_sha256: str | None
    allow_random_init: bool
    init_seed: int
    model_kwargs: dict | None
    precision: str
    cache_local_tokens: bool
    local_views: int


@dataclass(frozen=True)
class EmbedRuntime(StageSpec):
    """How fast the embed stage runs (config ``encoder``'s run-time knobs)."""

    section: ClassVar[str] = "encoder"
    keys: ClassVar[tuple[str, ...]] = tuple(schema.runtime_split("encoder")[1])

    batch_size: int
    num_workers: int
    device: str


def register(name: str):
    def deco(fn):
        REGISTRY[name] = fn
        return fn

    return deco


def build_encoder(spec: EncoderSpec | dict) -> Encoder:
    """Build from the config's ``encoder`` section (an ``EncoderSpec``, or the mapping it is made from).

    Without weights the model is random-init from ``init_seed``, so every sample sees the same network;
    the features then say ``weights_sha256: random-init``.
    """
    if isinstance(spec, dict):
        spec = EncoderSpec.from_config(spec)
    kwargs = dict(
        weights=spec.weights or None,
        expected_sha256=spec.weights_sha256 or None,
        allow_random_init=spec.allow_random_init,
        model_kwargs=spec.model_kwargs or None,
    )
    import torch

    # random-init encoders must be the same network in every job: seed before building
    torch.manual_seed(spec.init_seed)
    builder = REGISTRY.get(spec.name)
    enc = builder(**kwargs) if builder else build_timm(spec.timm_name or spec.name, **kwargs)
    enc.name = spec.name
    enc.precision = spec.precision
    enc.cache_local_tokens = spec.cache_local_tokens
    enc.local_views = int(spec.local_views)
    enc.info["config"] = spec.to_config()
    log.info("encoder %s: %d-d, weights %s", spec.name, enc.embed_dim, enc.weights_sha256)
    return enc
