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

# --- the spot-image branch of TRIPLEX and DKAN -----------------------------------------------------
# frozen: the spot's cached embedding (the embed stage's encoder); resnet18: a ResNet-18 trained with the head
# on the spot images (rule spot_images), as both papers do, random-init or from a local state dict
SPOT_ENCODER_DEFAULTS = {"spot_encoder": "frozen", "spot_encoder_weights": None, "spot_encoder_sha256": None}

# --- TRIPLEX -------------------------------------------------------------------------------------
TRIPLEX_MODEL_DEFAULTS = {
    **SPOT_ENCODER_DEFAULTS,
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


# --- DKAN ----------------------------------------------------------------------------------------
# Resolved as the others: training defaults < DKAN_MODEL_DEFAULTS < size < variant < the head's own keys.
# The default (size published, variant full) is DKAN's method at its published size: the public code
# (coffeeNtv/DKAN, config/her2st) where the paper is silent. docs/heads.md has the table.
DKAN_MODEL_DEFAULTS = {
    **SPOT_ENCODER_DEFAULTS,
    "size": "published",
    "variant": "full",
    "gene_queries": "semantic",  # semantic (text embeddings) | learned (free per-gene vectors: the control)
    "gene_text": "file",  # file: gene_embeddings (the pipeline's semantics.npz) | symbols: embed the symbols now
    "gene_embeddings": None,
    "knowledge_path": True,  # false: no gene queries; the image-fusion token predicts (Table 3 w/o knowledge)
    "contrast": "gene_nt_xent",  # gene_nt_xent (DKAN's code) | spot_clip (the earlier head) | none
    "readout": "shared",  # shared: one Linear(dim, 1) for every gene | per_gene: weights and bias per gene
    "intermediates": "image",  # image: 4 image-only per-gene heads (code) | scales: 3 gene-query blocks
    "tau": 0.1,  # DKAN: 0.1 (HER2ST, ST-Net), 0.08 (cSCC)
    "distill_lambda": 0.3,
    "loss_weights": "adaptive",  # normalised inverse losses | fixed: L_sup + clip_weight * L_contrast
    "contrast_boost": 1.0,  # the paper: 1; the public code multiplies the contrastive inverse by 3.0
    "clip_weight": 1.0,
    "input_norm": "standard",
    "step_size": 50,
    "gamma": 0.9,
    "eval_batch_size": 256,
}

DKAN_SIZES = {
    # the public code's HER2ST config: emb_dim 1024, 4 heads, MLP ratio 4, dropout 0.3, text encoder depth 3,
    # image-text cross encoder depth 4, expression-text depth 3, global encoder depth 5; Adam 1e-4, batch 128
    "published": {
        "dim": 1024,
        "heads": 4,
        "ff_mult": 4,
        "dropout": 0.3,
        "gene_layers": 3,
        "fusion_layers": 4,
        "expr_layers": 3,
        "global_layers": 5,
        "clip_dim": None,
        "lr": 1e-4,
        "batch_size": 128,
        "epochs": 200,
        "patience": 20,
    },
    # CPU size (the demo's): the same method, narrow and one layer deep
    "small": {
        "dim": 32,
        "heads": 4,
        "ff_mult": 1,
        "dropout": 0.1,
        "gene_layers": 1,
        "fusion_layers": 1,
        "expr_layers": 1,
        "global_layers": 1,
        "clip_dim": None,
        "lr": 3e-3,
        "batch_size": 32,
        "epochs": 20,
        "patience": 10,
    },
    # the head before the published method was followed (with variant legacy: that head exactly)
    "legacy": {
        "dim": 256,
        "heads": 4,
        "ff_mult": 2,
        "dropout": 0.1,
        "gene_layers": 1,
        "fusion_layers": 1,
        "expr_layers": 1,
        "global_layers": 1,
        "clip_dim": 128,
        "lr": 1e-4,
        "batch_size": 128,
        "epochs": 200,
        "patience": 20,
    },
}

DKAN_VARIANTS = {
    "full": {},
    # DKAN Table 3: without the text summary (gene symbols embedded by the local sentence model)
    "no_text_summary": {"gene_text": "symbols"},
    # without the contrastive path (no expression path, supervised loss only)
    "no_contrastive": {"contrast": "none"},
    # without the knowledge path (no gene semantics: the image-only fused token predicts every gene)
    "no_knowledge": {"knowledge_path": False, "contrast": "none", "intermediates": "image"},
    # the earlier head: spot-level CLIP on gene-averaged embeddings, per-gene read-outs, per-scale
    # gene-query intermediates
    "legacy": {"contrast": "spot_clip", "readout": "per_gene", "intermediates": "scales"},
}


# --- resolving a head's settings ------------------------------------------------------------------
# per head: its model defaults and its layer tables in resolution order (after the size); a preset's
# budget applies only at the paper sizes (see GENEDML_PRESET_BUDGETS)
LAYERED_HEADS = {
    "genedml": (GENEDML_MODEL_DEFAULTS, GENEDML_SIZES, {"preset": GENEDML_PRESETS, "variant": GENEDML_VARIANTS}),
    "triplex": (TRIPLEX_MODEL_DEFAULTS, TRIPLEX_SIZES, {}),
    "dkan": (DKAN_MODEL_DEFAULTS, DKAN_SIZES, {"variant": DKAN_VARIANTS}),
}


def resolve(head: str, train_defaults: dict, params: dict) -> dict:
    """The full settings of a ``genedml``, ``triplex`` or ``dkan`` head from its config section: training
    defaults < model defaults < size < (preset <) variant < the head's own keys (module doc)."""
    from genedml.heads.base import renamed_hint

    params = dict(params or {})
    model, sizes, tables = LAYERED_HEADS[head]
    layers = [*sizes.values(), *(v for t in tables.values() for v in t.values())]
    if head == "genedml":
        layers += GENEDML_PRESET_BUDGETS.values()
    allowed = set(train_defaults) | set(model) | {k for layer in layers for k in layer}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"{head}: unknown setting(s) {unknown}; known: {', '.join(sorted(allowed))}{renamed_hint(unknown)}"
        )
    out = {**train_defaults, **model}
    size = params.get("size", model["size"])
    out.update(_pick(sizes, size, "size", head))
    for what, table in tables.items():
        name = params.get(what, model[what])
        out.update(_pick(table, name, what, head))
        if what == "preset" and size != "small":
            out.update(GENEDML_PRESET_BUDGETS[name])
    out.update(params)
    return out
