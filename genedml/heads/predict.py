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


# spots predicted at once: memory is set by a block, not by the slide (a 20x slide has 10^4-10^5 spots)
BLOCK_SPOTS = 8192


def load_fold_models(model_dirs, sample: str, needs_images: bool):
    """[(fold, head, facts)] and the genes of the fold models of one head; they must agree on the genes."""
    models, genes = [], None
    for model_dir in model_dirs:
        head, facts, fold_gene_list = load_fold_model(model_dir)
        if head.needs_spot_images(head.params) and not needs_images:
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
        if int(facts["fold"]) in [k for k, _, _ in models]:
            raise InputError(f"fold {facts['fold']} is given twice", sample, model_dir)
        models.append((int(facts["fold"]), head, facts))
    if not models:
        raise InputError("no fold models given", sample, None)
    return models, genes


def _blocks_fingerprint(models, features_attrs: dict, n: int, block: int, spot_images) -> str:
    """What the finished blocks of an interrupted run were computed from: reused only when all agree."""
    import hashlib

    facts = [json.dumps(f, sort_keys=True, default=str) for _, _, f in models]
    text = json.dumps([facts, str(features_attrs.get("geometry_sha256", "")), features_attrs.get("encoder"), n, block])
    text += str(spot_images or "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def predict_sample(
    head_name: str,
    model_dirs: list,
    sample: str,
    features_path,
    out,
    reference_features=None,
    patient: str = "",
    spot_images=None,
    st=None,
    ood=None,
    block_spots: int = BLOCK_SPOTS,
) -> np.ndarray:
    """Write ``out`` (.h5ad) with the mean prediction over the fold models; return it.

    The features are read and predicted ``block_spots`` consecutive spots at a time (a head's section-level
    context is then its block's: the whole section up to that size), and each finished block is kept in a
    hidden folder beside ``out`` until the end, so an interrupted run resumes where it stopped.
    ``spot_images``: the section's spot-image store, for heads that train an image encoder on the pixels;
    ``st``: the section's ``.h5ad``, whose ``uns['spatial']`` (image and scale factors) is copied so that
    ``sc.pl.spatial`` draws the predictions; ``ood``: a TSV of ``genedml ood-score`` (barcode, score, ...),
    added to ``obs`` as ``ood_score``."""
    import shutil

    import anndata as ad
    from tqdm import tqdm

    from genedml.tiles.features import store_spots

    n, spatial, array_coords = store_spots(features_path, sample)
    first = load_features(features_path, sample, rows=slice(0, min(1, n)))
    if reference_features is not None:
        ref = load_features(reference_features, rows=slice(0, 1))
        check_compatible(first.attrs, ref.attrs, sample, features_path)
    models, genes = load_fold_models(model_dirs, sample, spot_images is not None)
    block_spots = max(int(block_spots), 1)
    blocks = [slice(i, min(i + block_spots, n)) for i in range(0, n, block_spots)]
    out = Path(out)
    partial = out.parent / f".{out.name}.partial"
    fingerprint = _blocks_fingerprint(models, first.attrs, n, block_spots, spot_images)
    marker = partial / "fingerprint"
    if partial.exists() and (not marker.exists() or marker.read_text() != fingerprint):
        shutil.rmtree(partial)  # made from other models or features: never mixed in
    partial.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)
    barcodes = []
    done = sum((partial / f"block{i}.npz").exists() for i in range(len(blocks)))
    if done:
        log.info("%s: resuming: %d of %d blocks of %d spots already predicted", sample, done, len(blocks), block_spots)
    for i, rows in enumerate(tqdm(blocks, desc=f"predict {sample} ({head_name})", unit="block", mininterval=5)):
        path = partial / f"block{i}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                barcodes.extend(z["barcodes"].tolist())
            continue
        feats = load_features(features_path, sample, rows=rows)
        if spot_images is not None:
            feats = feats.with_spot_images(spot_images, rows if len(blocks) > 1 else None)
        section = Section(sample, patient, feats, None, [])
        preds = []
        for fold, head, facts in models:
            pred = np.asarray(head.predict(section), dtype=np.float32)
            if pred.shape != (feats.n_spots, len(genes)):
                raise InputError(
                    f"fold model returned shape {pred.shape}, expected {(feats.n_spots, len(genes))}",
                    sample,
                    facts.get("model_dir", fold),
                )
            preds.append(pred)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, preds=np.stack(preds), barcodes=feats.barcodes.astype(str))
        barcodes.extend(feats.barcodes.astype(str).tolist())
        log.info(
            "%s: block %d/%d (%d spots) predicted by %d fold models",
            sample,
            i + 1,
            len(blocks),
            feats.n_spots,
            len(models),
        )
    folds = [k for k, _, _ in models]
    per_fold = np.zeros((len(models), n, len(genes)), np.float32)
    for i, rows in enumerate(blocks):
        with np.load(partial / f"block{i}.npz", allow_pickle=False) as z:
            per_fold[:, rows] = z["preds"]
    mean = per_fold.mean(0).astype(np.float32)
    obs = pd.DataFrame({"sample": sample, "patient": patient}, index=pd.Index(barcodes, name="barcode"))
    if ood is not None:
        scores = pd.read_csv(ood, sep="\t", index_col=0)
        missing = obs.index.difference(scores.index)
        if len(missing):
            raise InputError(f"the OOD table lacks {len(missing)} spots (e.g. {missing[0]})", sample, ood)
        obs["ood_score"] = scores.loc[obs.index, "score"].to_numpy(np.float32)
    result = ad.AnnData(X=mean, obs=obs, var=pd.DataFrame(index=pd.Index(genes, name="gene")))
    result.layers["prediction"] = mean
    # how much the fold models disagree: the standard deviation over folds, per spot and gene
    result.layers["std"] = per_fold.std(0).astype(np.float32) if len(models) > 1 else np.zeros_like(mean)
    for k, p in zip(folds, per_fold):
        result.layers[f"fold{k}"] = p
    result.obsm["spatial"] = np.asarray(spatial, dtype=float)
    result.obsm["array_coords"] = np.asarray(array_coords)
    if st is not None:
        spatial_uns = section_spatial_uns(st)
        if spatial_uns:
            result.uns["spatial"] = spatial_uns
    result.uns["genedml"] = {
        "head": head_name,
        "folds": folds,
        "ensemble": "mean over fold models; layers['std']: their standard deviation",
        "encoder": str(first.attrs.get("encoder", "")),
        "weights_sha256": str(first.attrs.get("weights_sha256", "")),
        "features": str(features_path),
        "block_spots": block_spots,
    }
    with atomic_path(out) as tmp:
        result.write_h5ad(tmp)
    shutil.rmtree(partial, ignore_errors=True)
    log.info(
        "%s: %s predictions for %d spots x %d genes (mean of %d fold models, %d blocks) -> %s",
        sample,
        head_name,
        n,
        len(genes),
        len(models),
        len(blocks),
        out,
    )
    return mean


def section_spatial_uns(st) -> dict:
    """``uns['spatial']`` of a section's ``.h5ad`` (images and scale factors), read without its matrix."""
    import h5py

    try:
        import anndata as ad

        with h5py.File(st, "r") as f:
            if "uns" not in f or "spatial" not in f["uns"]:
                return {}
            return ad.io.read_elem(f["uns"]["spatial"])
    except (OSError, KeyError) as exc:
        log.warning("%s: no uns['spatial'] read (%s)", st, exc)
        return {}
