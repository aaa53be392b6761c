"""Apply a head's trained fold models to sections without counts (an external test set, a new slide).

Every fold's model (``results/heads/{head}/fold{k}/``) predicts the section from its cached features;
the output ``.h5ad`` holds the mean over folds in ``X`` (and ``layers['prediction']``), each fold's own
prediction in ``layers['fold{k}']``, the spot barcodes as ``obs_names``, ``obsm['spatial']`` and
``obsm['array_coords']``, and in ``uns['genedml']`` the head, the folds and the encoder facts.

The new section's features must come from the same encoder, weights and tiling as the training
sections; given a training store (``reference_features``), a mismatch is an error naming both.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from genedml.atomic import atomic_path
from genedml.errors import InputError
from genedml.heads import Section, head_class
from genedml.tiles.features import load_features

log = logging.getLogger(__name__)

# feature-store attributes that must agree between training and prediction features
MATCHING_ATTRS = ("encoder", "weights_sha256", "embed_dim", "tile_spec", "precision")


def fold_genes(model_dir: Path) -> list[str]:
    import anndata as ad

    pred = ad.read_h5ad(Path(model_dir) / "predictions.h5ad", backed="r")
    try:
        return pred.var_names.tolist()
    finally:
        pred.file.close()


def load_fold_model(model_dir):
    """(head, fold facts, genes) of one trained fold."""
    model_dir = Path(model_dir)
    facts_path = model_dir / "fold.json"
    if not facts_path.exists():
        raise InputError("no trained model here (fold.json is missing; run the train step)", None, model_dir)
    facts = json.loads(facts_path.read_text())
    head = head_class(facts["type"]).load(model_dir, {})
    return head, facts, fold_genes(model_dir)


def check_compatible(new_attrs: dict, reference_attrs: dict, sample: str, path) -> None:
    diffs = [
        f"{k}: {new_attrs.get(k)!r} here, {reference_attrs.get(k)!r} in training"
        for k in MATCHING_ATTRS
        if k in reference_attrs and new_attrs.get(k) != reference_attrs.get(k)
    ]
    if diffs:
        raise InputError("features were not made like the training features (" + "; ".join(diffs) + ")", sample, path)


def predict_sample(
    head_name: str,
    model_dirs: list,
    sample: str,
    features_path,
    out,
    reference_features=None,
    patient: str = "",
    spot_images=None,
) -> np.ndarray:
    """Write ``out`` (.h5ad) with the mean prediction over the fold models; return it. ``spot_images``: the
    section's spot-image store, for heads that train an image encoder on the pixels."""
    import anndata as ad

    feats = load_features(features_path, sample)
    if spot_images is not None:
        feats = feats.with_spot_images(spot_images)
    if reference_features is not None:
        ref = load_features(reference_features)
        check_compatible(feats.attrs, ref.attrs, sample, features_path)
    section = Section(sample, patient, feats, None, [])
    preds, folds, genes = [], [], None
    for model_dir in model_dirs:
        head, facts, fold_gene_list = load_fold_model(model_dir)
        if head.needs_spot_images(head.params) and feats.spot_images is None:
            raise InputError(
                f"the {facts['type']} fold model reads spot images (spot_encoder {head.params['spot_encoder']}); "
                "give the section's spot-image store (--spot-images)",
                sample,
                model_dir,
            )
        if genes is None:
            genes = fold_gene_list
        elif fold_gene_list != genes:
            raise InputError("fold models predict different gene lists", sample, model_dir)
        pred = np.asarray(head.predict(section), dtype=np.float32)
        if pred.shape != (feats.n_spots, len(genes)):
            raise InputError(
                f"fold model returned shape {pred.shape}, expected {(feats.n_spots, len(genes))}", sample, model_dir
            )
        if int(facts["fold"]) in folds:
            raise InputError(f"fold {facts['fold']} is given twice", sample, model_dir)
        preds.append(pred)
        folds.append(int(facts["fold"]))
        log.info("%s: fold %d model (%s) predicted %d spots", sample, folds[-1], facts["type"], feats.n_spots)
    if not preds:
        raise InputError("no fold models given", sample, None)
    mean = np.mean(preds, axis=0).astype(np.float32)
    obs = pd.DataFrame(
        {"sample": sample, "patient": patient}, index=pd.Index(feats.barcodes.astype(str), name="barcode")
    )
    result = ad.AnnData(X=mean, obs=obs, var=pd.DataFrame(index=pd.Index(genes, name="gene")))
    result.layers["prediction"] = mean
    for k, p in zip(folds, preds):
        result.layers[f"fold{k}"] = p
    result.obsm["spatial"] = np.asarray(feats.spatial, dtype=float)
    result.obsm["array_coords"] = np.asarray(feats.array_coords)
    result.uns["genedml"] = {
        "head": head_name,
        "folds": folds,
        "ensemble": "mean over fold models",
        "encoder": str(feats.attrs.get("encoder", "")),
        "weights_sha256": str(feats.attrs.get("weights_sha256", "")),
        "features": str(features_path),
    }
    with atomic_path(out) as tmp:
        result.write_h5ad(tmp)
    log.info(
        "%s: %s predictions for %d spots x %d genes (mean of %d fold models) -> %s",
        sample,
        head_name,
        feats.n_spots,
        len(genes),
        len(preds),
        out,
    )
    return mean
