"""Helpers shared by the neural heads: feature views of a batch, input normalisation, output biases, settings.

Feature views (the torch side of ``base.FEATURE_VIEWS``): ``local`` = the spot's own embedding;
``neighbour_mean`` = mean of its in-image neighbour tiles; ``global_mean`` = the mean local embedding of the
spot's whole section (same for every spot of it).
"""

from __future__ import annotations

VIEWS = ("local", "neighbour_mean", "global_mean")

# the allowed values of the Gene-DML and TRIPLEX settings that name a choice
CHOICES = {
    "instance_targets": ("soft", "identity"),
    "grouping": ("kmeans", "spectral", "none"),
    "ig_queries": ("instance", "raw", "projected"),
    "pool": ("scales", "tokens"),
    "kmeans_init": ("random", "farthest"),
    "local_input": ("auto", "cls", "tokens"),
    "fusion": ("cross", "self"),
    "batching": ("section", "mixed"),
    "train_views": ("random", "identity"),  # every neural head: the local crop's view while training
    "input_norm": ("layer", "standard", "none"),  # genedml.networks.input_norm
    "spot_encoder": ("frozen", "resnet18"),  # genedml.networks.spot_encoder
}


def check_choice(key: str, value) -> None:
    if value not in CHOICES[key]:
        raise ValueError(f"unknown {key} {value!r}: {' | '.join(CHOICES[key])}")


def check_views(views) -> list[str]:
    views = [views] if isinstance(views, str) else list(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"unknown or empty feature view(s) {unknown or views}; choose from {list(VIEWS)}")
    return views


def batch_views(batch, views: list[str]):
    """(B, len(views) * D) float tensor."""
    import torch

    out = []
    for v in views:
        if v == "local":
            out.append(batch.local)
        elif v == "neighbour_mean":
            m = batch.neighbour_mask[..., None].to(batch.neighbour.dtype)
            out.append((batch.neighbour * m).sum(1) / m.sum(1).clamp_min(1.0))
        else:
            out.append(
                torch.cat(
                    [sec.local.mean(0, keepdim=True).expand(len(rows), -1) for sec, rows in section_groups(batch)]
                )
            )
    return torch.cat(out, dim=1)


def section_groups(batch) -> list:
    """``[(SectionTensors, rows)]`` of a batch in the order of its rows (one group unless batches mix sections)."""
    groups = getattr(batch, "groups", None)
    return list(groups) if groups else [(batch.section, batch.index)]


def training_locals(train: list):
    """The local embeddings of every training spot, (N, D)."""
    import torch

    return torch.cat([st.local for st in train])


def check_spot_encoder(settings: dict) -> None:
    """The trainable spot-image encoder settings (``genedml.networks.spot_encoder``) name a known encoder."""
    check_choice("spot_encoder", settings["spot_encoder"])  # without torch, as check_input_norm
    if settings["spot_encoder"] == "frozen" and settings["spot_encoder_weights"]:
        raise ValueError("spot_encoder_weights is set but spot_encoder is frozen (set spot_encoder: resnet18)")


def init_spot_encoder(encoder, settings: dict) -> dict:
    """Load the spot encoder's weights when a path is set (else it stays random-init); the facts to record."""
    path = settings["spot_encoder_weights"]
    digest = encoder.load_weights(path, settings["spot_encoder_sha256"]) if path else "random-init"
    return {"arch": encoder.arch, "weights": path, "weights_sha256": digest}


def check_input_norm(kind: str) -> str:
    """``kind`` if it names an input normalisation (``genedml.networks.input_norm``): layer | standard | none."""
    check_choice("input_norm", kind)  # checked without torch: settings are checked while Snakemake plans
    return kind


def fit_input_norm(module, x) -> None:
    """Fit a ``standard`` normalisation to training inputs; the others have nothing to fit."""
    if hasattr(module, "fit"):
        module.fit(x)


def set_output_bias(layer, train) -> None:
    """Start the output layer at the training spots' mean expression (zero weights are kept random): the
    first epochs then refine a mean predictor instead of climbing from zero. A deviation from the
    reference's default initialisation that only matters for short runs on small folds."""
    import torch

    with torch.no_grad():
        mean = torch.cat([st.targets for st in train]).mean(0)
        layer.bias.copy_(mean.to(layer.bias.device))
