"""The trainable spot-image encoder of TRIPLEX and DKAN: a ResNet-18 (timm) trained end to end on the pixels.

Both papers encode the spot's own image with a ResNet-18 trained with the head, while the neighbour and
global scales use frozen features. ``spot_encoder: resnet18`` does the same here: the spot images
(``genedml.tiles.spot_images``, uint8, read into memory once) reach the network as (B, 3, px, px) uint8 in
the batch's dihedral views; this module scales them to [0, 1], normalises with the ImageNet statistics and
returns the last feature map as tokens (B, h * w, 512) (TRIPLEX's target tokens; 7 x 7 at 224 px) or their
mean (B, 512) (DKAN's patch feature).

Weights: random-init (no download here), or a local state dict (``spot_encoder_weights``, e.g. timm's or
torchvision's ImageNet ResNet-18) loaded strictly except for the classifier (``fc.*``, unused), its SHA-256
checked against ``spot_encoder_sha256`` when set and recorded in the fold facts.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from genedml.heads.inputs import CHOICES

log = logging.getLogger(__name__)

SPOT_ENCODERS = CHOICES["spot_encoder"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SpotEncoder(nn.Module):
    def __init__(self, arch: str = "resnet18"):
        super().__init__()
        from genedml.compat import import_timm

        timm = import_timm()
        if arch not in SPOT_ENCODERS[1:]:
            raise ValueError(f"unknown spot_encoder {arch!r}: {' | '.join(SPOT_ENCODERS)}")
        self.arch = arch
        self.net = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="")
        self.dim = int(self.net.num_features)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)

    def feature_map(self, pixels):
        """(B, C, h, w) of uint8 pixels (B, 3, px, px)."""
        x = (pixels.float() - self.mean) / self.std
        return self.net.forward_features(x)

    def tokens(self, pixels):
        """(B, h * w, C): the feature map's positions as tokens, row-major."""
        return self.feature_map(pixels).flatten(2).transpose(1, 2)

    def pooled(self, pixels):
        """(B, C): the feature map's mean."""
        return self.feature_map(pixels).mean((2, 3))

    def load_weights(self, path, expected_sha256: str | None = None) -> str:
        """Load a local state dict into the ResNet strictly (its ``fc.*`` classifier dropped); its SHA-256."""
        from pathlib import Path

        from genedml.tiles.encoders import load_state_dict_file, sha256_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"spot_encoder_weights not found: {path}")
        digest = sha256_file(path)
        if expected_sha256 and digest != expected_sha256.lower():
            raise ValueError(
                f"spot_encoder_weights {path}: SHA-256 is {digest}, spot_encoder_sha256 is {expected_sha256}"
            )
        state = backbone_state(load_state_dict_file(path), path)
        own = self.net.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or wrong:  # checked before loading: a refused file changes nothing
            raise ValueError(
                f"spot_encoder_weights {path} are not a {self.arch}: {len(missing)} missing keys (e.g. "
                f"{missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(wrong)} of another "
                f"shape (e.g. {wrong[:3]})"
            )
        self.net.load_state_dict(state, strict=True)
        log.info("spot encoder %s: weights %s (SHA-256 %s)", self.arch, path, digest)
        return digest


def backbone_state(state: dict, path) -> dict:
    """The ResNet backbone's tensors of a checkpoint, keyed as timm's / torchvision's ``resnet18``.

    Checkpoints of a ResNet inside a larger model prefix its keys (Ciga et al.'s self-supervised
    histopathology ResNet-18, ``tenpercent_resnet18.ckpt``, which TRIPLEX's and DKAN's code load, keeps it
    under a Lightning module): the prefix is the one in front of the stem convolution ``conv1.weight``, and
    keys outside it (a projection head) are left out with a log line. The classifier ``fc.*`` is dropped.
    """
    stems = [k for k in state if k.endswith("conv1.weight") and getattr(state[k], "ndim", 0) == 4 and "layer" not in k]
    if not stems:
        raise ValueError(f"spot_encoder_weights {path}: no ResNet stem (conv1.weight) among {len(state)} tensors")
    prefix = min(stems, key=len)[: -len("conv1.weight")]
    inside = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    left_out = len(state) - len(inside)
    if left_out:
        log.info("spot_encoder_weights %s: %d tensors outside the backbone %r left out", path, left_out, prefix)
    return {k: v for k, v in inside.items() if not k.startswith("fc.")}


def dihedral_pixels(pixels, views):
    """(B, 3, H, W) pixels, row i in dihedral view ``views[i]`` (``genedml.tiles.views``: view k < 4 is
    ``rot90`` k times counter-clockwise, view k >= 4 that view's left-right mirror). ``views`` None: as is."""
    if views is None:
        return pixels
    out = pixels.clone()
    views = torch.as_tensor(views, device=pixels.device)
    for v in torch.unique(views).tolist():
        if v == 0:
            continue
        rows = torch.nonzero(views == v).flatten()
        x = torch.rot90(pixels[rows], v % 4, dims=(2, 3))
        out[rows] = torch.flip(x, dims=(3,)) if v >= 4 else x
    return out
