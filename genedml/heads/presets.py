"""Named sizes, loss presets and ablation variants of the Gene-DML and TRIPLEX heads.

A head's settings are resolved in layers, later layers winning:
training defaults < model defaults < ``size`` < ``preset`` < ``variant`` < the head's own config keys.
Sizes follow Gene-DML's public code (which takes its encoder sizes from TRIPLEX) and TRIPLEX's
published configs; ``small`` is this project's CPU default. ``mlp`` sizes are ratios of the width.
"""

from __future__ import annotations

# --- Gene-DML ------------------------------------------------------------------------------------
GENEDML_MODEL_DEFAULTS = {
    "size": "small",
    "preset": "paper",
    "variant": "full",
    # every size sets the widths (encoder_dim null = the neighbour/global encoders run at the cached feature
    # width, as the reference), k and the optimiser budget; the fusion layer below is the code's, at any size
    "global_kernel": 3,
    "fusion_depth": 1,
    "fusion_heads": 1,
    "fusion_mlp_ratio": 2.0,
    "fusion_dropout": 0.1,
    "fusion_ffn": True,  # the code's extra FFN (no residual) after the fusion layer
    "gene_dropout": 0.3,
    "predictor_dropout": 0.1,
    "pool": "scales",  # fused representation: mean of the scale means (scales) or of all tokens (tokens)
    "local_input": "auto",  # auto: cached token maps when the store has them, else CLS | cls | tokens
    "standardise_inputs": True,  # per-dimension standardisation of cached features (training statistics)
    "use_neighbour": True,
    "use_global": True,
    # instance-level loss
    "instance_scales": ["local", "neighbour", "global"],  # or ["fused"] (single level) or [] (none)
    "instance_targets": "soft",  # soft (BLEEP-style, the paper) | identity (plain CLIP)
    "tau_ins": 0.07,
    "w_ins": 1.0,
    # cross-level instance-group loss (its weight, temperature and query space come from the preset)
    "grouping": "kmeans",  # kmeans | spectral | none (each instance its own group)
    "kmeans_iters": 10,
    "group_projection": True,  # group the grouping projection's output (false: the instance embeddings)
    "kmeans_init": "random",  # random rows of the batch (the reference's first rows of a shuffled batch) | farthest
    "w_pred": 1.0,
    "batching": "mixed",  # batches drawn across the fold's sections, as the reference
    "eval_batch_size": 4096,
}

GENEDML_SIZES = {
    # CPU default: features projected to 128-d, one-layer encoders; a fold of ~750 spots in ~1 min
    "small": {
        "encoder_dim": 128,
        "proj_dim": 128,
        "neighbour_depth": 1,
        "neighbour_heads": 4,
        "neighbour_mlp_ratio": 2.0,
        "neighbour_dropout": 0.1,
        "global_depth": 2,
        "global_heads": 4,
        "global_mlp_ratio": 2.0,
        "global_dropout": 0.1,
        "k": 8,
        "batch_size": 128,
        "lr": 5e-4,
        "epochs": 80,
        "patience": 15,
    },
    "her2st": {
        "encoder_dim": None,
        "proj_dim": 512,
        "neighbour_depth": 4,
        "neighbour_heads": 4,
        "neighbour_mlp_ratio": 4.0,
        "neighbour_dropout": 0.3,
        "global_depth": 5,
        "global_heads": 8,
        "global_mlp_ratio": 4.0,
        "global_dropout": 0.3,
        "k": 18,
        "batch_size": 512,
        "lr": 1e-4,
        "epochs": 200,
        "patience": 20,
    },
    "stnet": {
        "encoder_dim": None,
        "proj_dim": 512,
        "neighbour_depth": 4,
        "neighbour_heads": 8,
        "neighbour_mlp_ratio": 4.0,
        "neighbour_dropout": 0.3,
        "global_depth": 3,
        "global_heads": 8,
        "global_mlp_ratio": 2.0,
        "global_dropout": 0.1,
        "k": 90,
        "batch_size": 512,
        "lr": 1e-4,
        "epochs": 200,
        "patience": 20,
    },
    "cscc": {
        "encoder_dim": None,
        "proj_dim": 512,
        "neighbour_depth": 4,
        "neighbour_heads": 16,
        "neighbour_mlp_ratio": 1.0,
        "neighbour_dropout": 0.3,
        "global_depth": 2,
        "global_heads": 16,
        "global_mlp_ratio": 1.0,
        "global_dropout": 0.1,
        "k": 25,
        "batch_size": 256,
        "lr": 1e-4,
        "epochs": 200,
        "patience": 20,
    },
}
GENEDML_SIZES["skinst"] = GENEDML_SIZES["cscc"]

GENEDML_PRESETS = {
    # the paper (eq. 5-7 and its stated hyper-parameters): lambda 0.8, tau_I-G 0.07; each modality's
    # (L2-normalised) instance embeddings are classified against the other modality's group centroids
    "paper": {"lambda_ig": 0.8, "tau_ig": 0.07, "ig_queries": "instance", "normalise_centroids": True},
    # the public code: lambda 1.0, tau_I-G 0.1; the queries are the raw fused image token and the normalised
    # gene token while the centroids live in the grouping projection's space (unnormalised); the fused
    # representation is the mean over all tokens; the cached features enter unstandardised
    "reference_code": {
        "lambda_ig": 1.0,
        "tau_ig": 0.1,
        "ig_queries": "raw",
        "normalise_centroids": False,
        "pool": "tokens",
        "standardise_inputs": False,
    },
}
# Training budget a preset sets on the paper-sized models only (size her2st | stnet | cscc; the CPU size
# keeps its own): the paper's text trains with batch 256, the code with the size's 512 / 512 / 256.
GENEDML_PRESET_BUDGETS = {"paper": {"batch_size": 256}, "reference_code": {}}

# The paper's ablation rows (Tab. 3, supp. Tab. 3 and 7), as switches. The I-G weight of the rows that
# keep it comes from the preset.
GENEDML_VARIANTS = {
    "full": {},
    # Tab. 3 row 1, plain bimodal: one fused image-gene instance loss, no I-G, no global encoder
    "plain": {"instance_scales": ["fused"], "lambda_ig": 0.0, "use_global": False},
    # row 2, + multi-scale instance-level alignment, with the global encoder
    "multiscale": {"instance_scales": ["local", "neighbour", "global"], "lambda_ig": 0.0},
    # row 3, + instance-group loss with feature grouping only (single-level I-L, no global encoder)
    "groups": {"instance_scales": ["fused"], "use_global": False},
    "no-global": {"use_global": False},  # full without global (its I-L covers local and neighbour)
    # full without feature grouping, two readings: no groups at all (each instance its own group) ...
    "no-grouping": {"grouping": "none"},
    # ... or k-means without the grouping projection (on the instance embeddings themselves)
    "no-group-projection": {"group_projection": False},
    "mse-only": {"instance_scales": [], "lambda_ig": 0.0},  # no contrastive term at all
}

# --- TRIPLEX -------------------------------------------------------------------------------------
TRIPLEX_MODEL_DEFAULTS = {
    "size": "small",
    "encoder_dim": None,
    "fusion": "cross",  # cross: TRIPLEX (global token queries local and neighbour tokens) | self: Gene-DML's
    "global_kernel": 3,
    "alpha": 0.3,  # weight of the distillation terms
    "local_input": "auto",
    "standardise_inputs": True,
    "batching": "mixed",
    "eval_batch_size": 4096,
    "step_size": 50,
    "gamma": 0.9,
}

TRIPLEX_SIZES = {
    "small": {
        "encoder_dim": 128,
        "neighbour_depth": 1,
        "neighbour_heads": 4,
        "neighbour_mlp_ratio": 2.0,
        "neighbour_dropout": 0.1,
        "global_depth": 2,
        "global_heads": 4,
        "global_mlp_ratio": 2.0,
        "global_dropout": 0.1,
        "fusion_depth": 1,
        "fusion_heads": 4,
        "fusion_mlp_ratio": 2.0,
        "fusion_dropout": 0.1,
        "batch_size": 128,
        "lr": 5e-4,
        "epochs": 80,
        "patience": 15,
    },
    "her2st": {
        "neighbour_depth": 4,
        "neighbour_heads": 4,
        "neighbour_mlp_ratio": 4.0,
        "neighbour_dropout": 0.3,
        "global_depth": 5,
        "global_heads": 8,
        "global_mlp_ratio": 4.0,
        "global_dropout": 0.3,
        "fusion_depth": 1,
        "fusion_heads": 4,
        "fusion_mlp_ratio": 4.0,
        "fusion_dropout": 0.4,
        "batch_size": 128,
        "lr": 1e-4,
        "epochs": 200,
        "patience": 20,
    },
    "stnet": {
        "neighbour_depth": 4,
        "neighbour_heads": 8,
        "neighbour_mlp_ratio": 4.0,
        "neighbour_dropout": 0.3,
        "global_depth": 3,
        "global_heads": 8,
        "global_mlp_ratio": 2.0,
        "global_dropout": 0.1,
        "fusion_depth": 3,
        "fusion_heads": 16,
        "fusion_mlp_ratio": 4.0,
        "fusion_dropout": 0.4,
        "batch_size": 128,
        "lr": 1e-4,
        "epochs": 200,
        "patience": 20,
    },
    "cscc": {
        "neighbour_depth": 4,
        "neighbour_heads": 16,
        "neighbour_mlp_ratio": 1.0,
        "neighbour_dropout": 0.3,
        "global_depth": 2,
        "global_heads": 16,
        "global_mlp_ratio": 1.0,
        "global_dropout": 0.1,
        "fusion_depth": 2,
        "fusion_heads": 8,
        "fusion_mlp_ratio": 4.0,
        "fusion_dropout": 0.1,
        "batch_size": 128,
        "lr": 1e-4,
        "epochs": 200,
        "patience": 20,
    },
}
TRIPLEX_SIZES["skinst"] = TRIPLEX_SIZES["cscc"]


def _pick(table: dict, name, what: str, head: str) -> dict:
    if name not in table:
        raise ValueError(f"{head}: unknown {what} {name!r}; choose from {', '.join(sorted(table))}")
    return table[name]


def resolve(head: str, train_defaults: dict, params: dict) -> dict:
    """The full settings of a ``genedml`` or ``triplex`` head from its config section (see module doc)."""
    params = dict(params or {})
    if head == "genedml":
        model, sizes = GENEDML_MODEL_DEFAULTS, GENEDML_SIZES
    elif head == "triplex":
        model, sizes = TRIPLEX_MODEL_DEFAULTS, TRIPLEX_SIZES
    else:
        raise ValueError(head)
    layers = [
        *sizes.values(),
        *(GENEDML_PRESETS.values() if head == "genedml" else ()),
        *(GENEDML_PRESET_BUDGETS.values() if head == "genedml" else ()),
        *(GENEDML_VARIANTS.values() if head == "genedml" else ()),
    ]
    allowed = set(train_defaults) | set(model) | {k for layer in layers for k in layer}
    unknown = sorted(set(params) - allowed)
    if unknown:
        from genedml.heads.base import renamed_hint

        raise ValueError(
            f"{head}: unknown setting(s) {unknown}; known: {', '.join(sorted(allowed))}{renamed_hint(unknown)}"
        )
    out = {**train_defaults, **model}
    size = params.get("size", model["size"])
    out.update(_pick(sizes, size, "size", head))
    if head == "genedml":
        preset = params.get("preset", model["preset"])
        out.update(_pick(GENEDML_PRESETS, preset, "preset", head))
        if size != "small":
            out.update(GENEDML_PRESET_BUDGETS[preset])
        out.update(_pick(GENEDML_VARIANTS, params.get("variant", model["variant"]), "variant", head))
    out.update(params)
    return out
