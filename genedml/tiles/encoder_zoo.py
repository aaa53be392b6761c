"""The encoder zoo: one card per pathology tile encoder users pick, with the facts needed to build it and to
get its weights.

A card is data only (no torch, no timm: the planner and ``genedml encoders`` read it without them); the
builder in ``genedml/tiles/encoders.py`` turns it into a model with timm, ``pretrained=False``, and loads
the weights from a local file. Every fact is written once, here. Facts that could not be checked against
the publisher's own code or model card are listed in the card's ``unverified`` and explained in its notes.

Sources of the facts (read, not copied): the publishers' model cards and repositories, and the loaders of
Mahmood Lab's TRIDENT and HEST toolkits, which build each of these encoders with timm.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Bioptimus' own normalisation of H-optimus-0 and H-optimus-1 inputs
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)

POOLINGS = {
    "cls": "the CLS token (timm's pooled output)",
    "cls+mean": "the CLS token concatenated with the mean of the patch tokens (register tokens left out)",
    "attn-pool": "an attentional pooler over all output tokens (one learned query), then a LayerNorm",
    "avg": "global average pooling of the last feature map (timm's pooled output)",
}
# how a checkpoint's keys are laid out: timm's own names, or a layout genedml converts at load time
LAYOUTS = {
    "timm": "timm's parameter names (what timm.create_model(...).state_dict() has)",
    "conch-vision": "CONCH v1.5's vision tower: trunk.* (a timm ViT-L/16), attn_pool_contrast.*, ln_contrast.*",
    "transformers-dinov2": "a Hugging Face transformers Dinov2Model (embeddings.*, encoder.layer.N.*, layernorm.*); "
    "converted to timm names at load time (timm-named files load as they are)",
}


@dataclass(frozen=True)
class EncoderCard:
    """One encoder of the zoo. ``timm_kwargs`` are plain data: a timm layer class is named by a string
    (``mlp_layer: "SwiGLUPacked"``), an activation by timm's name (``act_layer: "silu"``)."""

    name: str  # config encoder.name
    title: str
    timm_name: str  # timm architecture built with pretrained=False
    timm_kwargs: dict
    embed_dim: int  # width of the pooled embedding the features store holds
    pooling: str  # a key of POOLINGS
    mean: tuple
    std: tuple
    input_px: int  # the tile side the publisher feeds the encoder
    mpp: float | None  # native µm per pixel of those tiles (None: not a pathology encoder)
    magnification: str | None
    licence: str
    gated: bool  # Hugging Face asks users to request access / accept conditions before downloading
    url: str  # where users get the weights
    weights_file: str  # the file of that repository genedml loads
    download: str  # one shell line that downloads it (on a machine whose Hugging Face login has access)
    sha256: str | None = None  # only where the publisher publishes one
    layout: str = "timm"  # a key of LAYOUTS
    ignore_keys: tuple = ()  # checkpoint key prefixes dropped before the strict load (classifier heads)
    drop_modules: tuple = ()  # trunk modules replaced by identities (a truncated network)
    unverified: tuple = ()  # names of the fields above that could not be checked
    notes: tuple = ()

    @property
    def env_var(self) -> str:
        """The environment variable naming the weights file when encoder.weights is not set."""
        return "GENEDML_" + re.sub(r"[^A-Z0-9]+", "_", self.name.upper()).strip("_") + "_WEIGHTS"

    def help(self) -> str:
        """Where to get the weights and how to point genedml at them (the missing-weights error)."""
        get = "request access at" if self.gated else "download from"
        terms = f"{'gated; ' if self.gated else ''}licence {self.licence}"
        return (
            f"{self.title} weights ({terms}): {get} {self.url}, download {self.weights_file} "
            f"(e.g. `{self.download}`), then set encoder.weights in config.yaml or the environment variable "
            f"{self.env_var} to that file."
        )

    def row(self) -> dict:
        """The card as plain JSON-able data (``genedml encoders --json``)."""
        out = asdict(self)
        out.update(
            mean=list(self.mean),
            std=list(self.std),
            ignore_keys=list(self.ignore_keys),
            drop_modules=list(self.drop_modules),
            unverified=list(self.unverified),
            notes=list(self.notes),
            env_var=self.env_var,
            pooling_description=POOLINGS[self.pooling],
            layout_description=LAYOUTS[self.layout],
        )
        return out


def _hf(repo: str, filename: str, folder: str) -> dict:
    return dict(
        url=f"https://huggingface.co/{repo}",
        weights_file=filename,
        download=f"hf download {repo} {filename} --local-dir weights/{folder}",
    )


_VIT_L16 = dict(img_size=224, patch_size=16, init_values=1e-5, num_classes=0, dynamic_img_size=True)
_VIT_G14_REG4 = dict(img_size=224, init_values=1e-5, num_classes=0, global_pool="token", dynamic_img_size=True)
_NC_ND = "CC-BY-NC-ND-4.0 (non-commercial academic research)"

_H_OPTIMUS_0 = EncoderCard(
    name="h-optimus-0",
    title="H-optimus-0",
    timm_name="vit_giant_patch14_reg4_dinov2",
    timm_kwargs=_VIT_G14_REG4,
    embed_dim=1536,
    pooling="cls",
    mean=HOPTIMUS_MEAN,
    std=HOPTIMUS_STD,
    input_px=224,
    mpp=0.5,
    magnification="20x",
    licence="Apache-2.0",
    gated=True,
    **_hf("bioptimus/H-optimus-0", "pytorch_model.bin", "h-optimus-0"),
    unverified=("gated",),
    notes=(
        "ViT-g/14 with 4 registers (DINOv2-style): width 1536, 40 blocks, 24 heads, SwiGLU MLP, SiLU; "
        "the CLS token. Inputs normalised with Bioptimus' own mean and std.",
        "Hugging Face asks users to accept the model's conditions before downloading (not checked here).",
    ),
)

# the same network and normalisation as H-optimus-0; other weights, terms and access
_H_OPTIMUS_1 = replace(
    _H_OPTIMUS_0,
    name="h-optimus-1",
    title="H-optimus-1",
    licence="Bioptimus' terms on the model card (not checked here)",
    **_hf("bioptimus/H-optimus-1", "pytorch_model.bin", "h-optimus-1"),
    unverified=("licence",),
    notes=(
        "Same architecture and normalisation as H-optimus-0 (ViT-g/14 reg4, 1536-d CLS token).",
        "Access is granted on request on Hugging Face; the licence text was not read here.",
    ),
)

_CARDS = (
    EncoderCard(
        name="uni",
        title="UNI (v1)",
        timm_name="vit_large_patch16_224",
        timm_kwargs=_VIT_L16,
        embed_dim=1024,
        pooling="cls",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_px=224,
        mpp=0.5,
        magnification="20x",
        licence=_NC_ND,
        gated=True,
        **_hf("MahmoodLab/UNI", "pytorch_model.bin", "uni"),
        notes=("ViT-L/16 with layer-scale, 24 blocks, 16 heads; the CLS token after the final norm.",),
    ),
    EncoderCard(
        name="uni2-h",
        title="UNI2-h",
        timm_name="vit_giant_patch14_224",
        timm_kwargs=dict(
            img_size=224,
            patch_size=14,
            depth=24,
            num_heads=24,
            init_values=1e-5,
            embed_dim=1536,
            mlp_ratio=2.66667 * 2,
            num_classes=0,
            no_embed_class=True,
            mlp_layer="SwiGLUPacked",
            act_layer="silu",
            reg_tokens=8,
            dynamic_img_size=True,
        ),
        embed_dim=1536,
        pooling="cls",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_px=224,
        mpp=0.5,
        magnification="20x",
        licence=_NC_ND,
        gated=True,
        **_hf("MahmoodLab/UNI2-h", "pytorch_model.bin", "uni2-h"),
        notes=(
            "ViT-H/14-like: width 1536, 24 blocks, 24 heads, SwiGLU MLP (packed), SiLU, 8 register tokens, "
            "position embeddings for the patches only (no_embed_class).",
        ),
    ),
    EncoderCard(
        name="conch_v1_5",
        title="CONCH v1.5 (vision tower)",
        timm_name="vit_large_patch16_224",
        timm_kwargs=dict(img_size=448, patch_size=16, init_values=1.0, num_classes=0, dynamic_img_size=True),
        embed_dim=768,
        pooling="attn-pool",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_px=448,
        mpp=0.5,
        magnification="20x",
        licence=_NC_ND,
        gated=True,
        layout="conch-vision",
        **_hf("MahmoodLab/conchv1_5", "pytorch_model_vision.bin", "conch_v1_5"),
        unverified=("licence", "gated"),
        notes=(
            "The trunk is a ViT-L/16 (width 1024, layer-scale) that timm builds; the 768-d embedding comes from "
            "an attentional pooler (one learned query, 8 heads, keys/values from the 1024-d tokens) and a "
            "LayerNorm. timm has no such pooler: genedml implements it (genedml/tiles/encoder_layouts.py) with "
            "the checkpoint's parameter names, so the published file loads strictly; agreement with the "
            "publisher's code on the real weights has not been checked here (unverified).",
            "TRIDENT reads 512 px tiles at 20x and resizes them to 448 px (about 0.57 µm/px at the encoder's "
            "input); genedml feeds tiles.tile_px pixels at tiles.target_mpp as they are.",
            "The checkpoint's position embeddings are resampled to the 448 px grid at load time when their grid "
            "differs (the publisher's code interpolates them at run time instead; small numerical differences).",
            "forward_features gives the trunk's 1024-d tokens (CLS + 784 patches at 448 px) for the token cache.",
            "Licence and gating are taken to be those of CONCH v1 and the UNI models (CC-BY-NC-ND-4.0, access "
            "on request); the conchv1_5 model card itself was not read here.",
        ),
    ),
    EncoderCard(
        name="virchow2",
        title="Virchow2",
        timm_name="vit_huge_patch14_224",
        timm_kwargs=dict(
            img_size=224,
            init_values=1e-5,
            num_classes=0,
            reg_tokens=4,
            mlp_ratio=5.3375,
            global_pool="",
            dynamic_img_size=True,
            mlp_layer="SwiGLUPacked",
            act_layer="silu",
        ),
        embed_dim=2560,
        pooling="cls+mean",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_px=224,
        mpp=0.5,
        magnification="20x",
        licence=_NC_ND,
        gated=True,
        **_hf("paige-ai/Virchow2", "pytorch_model.bin", "virchow2"),
        unverified=("mpp",),
        notes=(
            "ViT-H/14 (width 1280, 32 blocks, 16 heads), SwiGLU MLP (packed), SiLU, 4 register tokens; the "
            "embedding is the CLS token (1280) concatenated with the mean of the 256 patch tokens (1280), "
            "the registers left out: 2560-d.",
            "Trained on tiles of several magnifications (5x to 40x); 20x is the setting TRIDENT uses "
            "(the µm/px is therefore a recommendation, not a single native resolution).",
        ),
    ),
    _H_OPTIMUS_0,
    _H_OPTIMUS_1,
    EncoderCard(
        name="phikon-v2",
        title="Phikon-v2",
        timm_name="vit_large_patch16_224",
        timm_kwargs=dict(img_size=224, patch_size=16, init_values=1.0, num_classes=0, dynamic_img_size=True),
        embed_dim=1024,
        pooling="cls",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_px=224,
        mpp=0.5,
        magnification="20x",
        licence="Owkin non-commercial licence",
        gated=False,
        layout="transformers-dinov2",
        **_hf("owkin/phikon-v2", "model.safetensors", "phikon-v2"),
        unverified=("gated",),
        notes=(
            "ViT-L/16 trained with DINOv2 (width 1024, 24 blocks, 16 heads, GELU MLP, layer-scale, no "
            "registers); the CLS token of the last hidden state, after the final LayerNorm.",
            "Published in Hugging Face transformers format (Dinov2Model). genedml maps its keys to the timm "
            "ViT at load time (query/key/value concatenated into qkv; the unused mask token dropped; either "
            "transformers 4 or 5 attention names), and resamples the position embeddings when their grid "
            "differs from the 224 px one. A test checks the mapping against transformers' own Dinov2Model "
            "on a random checkpoint; the real file's config (image_size) was not read here.",
        ),
    ),
    EncoderCard(
        name="prov-gigapath",
        title="Prov-GigaPath (tile encoder)",
        timm_name="vit_giant_patch14_dinov2",
        timm_kwargs=dict(
            img_size=224,
            in_chans=3,
            patch_size=16,
            embed_dim=1536,
            depth=40,
            num_heads=24,
            mlp_ratio=5.33334,
            num_classes=0,
            dynamic_img_size=True,
        ),
        embed_dim=1536,
        pooling="cls",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_px=224,
        mpp=0.5,
        magnification="20x",
        licence="Apache-2.0 (research use only, per the README)",
        gated=True,
        **_hf("prov-gigapath/prov-gigapath", "pytorch_model.bin", "prov-gigapath"),
        notes=(
            "timm's ViT-g/14 DINOv2 definition with 16 px patches: width 1536, 40 blocks, 24 heads, SwiGLU MLP "
            "(packed), SiLU, layer-scale, no registers; the CLS token.",
            "The publisher resizes tiles to 256 px and centre-crops 224 px, from slides at 0.5 µm/px.",
        ),
    ),
    EncoderCard(
        name="resnet50",
        title="ResNet-50 (ImageNet)",
        timm_name="resnet50",
        timm_kwargs=dict(num_classes=0),
        embed_dim=2048,
        pooling="avg",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_px=224,
        mpp=None,
        magnification=None,
        licence="BSD-3-Clause (torchvision weights)",
        gated=False,
        ignore_keys=("fc.",),
        **_hf("timm/resnet50.tv_in1k", "model.safetensors", "resnet50"),
        unverified=("licence",),
        notes=(
            "The classic ImageNet baseline (torchvision's weights as timm publishes them): global average "
            "pool of layer4, 2048-d. The checkpoint's classifier (fc.*) is dropped before the strict load.",
        ),
    ),
    EncoderCard(
        name="resnet50_trunc",
        title="ResNet-50 truncated after layer3 (HEST-Benchmark)",
        timm_name="resnet50",
        timm_kwargs=dict(num_classes=0),
        embed_dim=1024,
        pooling="avg",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_px=224,
        mpp=0.5,
        magnification="20x",
        licence="BSD-3-Clause (torchvision weights)",
        gated=False,
        ignore_keys=("layer4.", "fc."),
        drop_modules=("layer4",),
        **_hf("timm/resnet50.tv_in1k", "model.safetensors", "resnet50"),
        unverified=("licence",),
        notes=(
            "HEST-Benchmark's and TRIDENT's ResNet-50 baseline: the same ImageNet weights, the network cut "
            "after layer3 (1024 channels) and globally average-pooled: 1024-d. layer4 and the classifier are "
            "dropped from the checkpoint before the strict load.",
            "The µm/px is the benchmark's setting (ImageNet weights have no native resolution).",
        ),
    ),
)

ZOO: dict[str, EncoderCard] = {card.name: card for card in _CARDS}


def widths() -> dict[str, int]:
    """Embedding width of every zoo encoder (known without building it)."""
    return {name: c.embed_dim for name, c in ZOO.items()}


def mpp_mismatch(name: str, target_mpp, tolerance: float = 0.25) -> str | None:
    """A warning when tiles are cut at a resolution more than ``tolerance`` away from the encoder's native
    µm/px (None when they agree, when the encoder has none, or when tiles are cut at the slide's own)."""
    c = ZOO.get(name)
    if c is None or c.mpp is None or not isinstance(target_mpp, (int, float)) or isinstance(target_mpp, bool):
        return None
    if abs(float(target_mpp) - c.mpp) <= tolerance * c.mpp:
        return None
    return (
        f"encoder {name!r} was trained on tiles at {c.mpp:g} µm/px ({c.magnification}); tiles.target_mpp is "
        f"{float(target_mpp):g} µm/px, {abs(float(target_mpp) / c.mpp - 1):.0%} away"
    )


def table() -> list[dict]:
    """One row a card: what ``genedml encoders`` prints."""
    rows = []
    for c in ZOO.values():
        rows.append(
            {
                "name": c.name,
                "architecture": c.timm_name
                + "".join(f" minus {m}" for m in c.drop_modules)
                + ("" if c.pooling in ("cls", "avg") else f" ({c.pooling})"),
                "dim": c.embed_dim,
                "um_per_px": "-" if c.mpp is None else f"{c.mpp:g}",
                "licence": c.licence,
                "gated": "yes" if c.gated else "no",
                "env_var": c.env_var,
                "download": c.download,
                "unverified": ", ".join(c.unverified) or "-",
            }
        )
    return rows


def format_table() -> str:
    rows = table()
    cols = list(rows[0])
    width = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in cols}
    lines = ["  ".join(k.ljust(width[k]) for k in cols)]
    lines += ["  ".join(str(r[k]).ljust(width[k]) for k in cols) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
