"""Fit one head on one fold from cached features and targets; write held-out predictions.

Outputs in the fold's folder: ``predictions.h5ad`` (test spots of every test section: X = prediction,
``layers['truth']``, ``obs['sample']``, ``obsm['spatial']``), the head's model files and ``fold.json``
(split, protocol, chosen hyper-parameters, timings).

The head's ``protocol`` decides what it trains and selects on. ``honest``: it trains on the fold's
training patients and makes every model-selection decision on the inner validation patients; the test
fold is only predicted. ``reference`` (the published code's): it trains on every non-test patient (the
validation patients join the training set) and selects and early-stops on the TEST fold itself.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from genedml.atomic import atomic_path, write_json
from genedml.errors import InputError
from genedml.heads import Section, head_class
from genedml.heads.torch_head import NonFiniteLoss
from genedml.pipeline import schema
from genedml.study.folds import read_folds
from genedml.tiles.features import load_features

log = logging.getLogger(__name__)


class TrainingError(InputError):
    """Training failed in a way the user must act on (e.g. a non-finite loss); names the head and the fold."""


def load_section(
    sample: str, patient: str, features_path, targets_path=None, spot_images_path=None, lazy: bool = True
) -> Section:
    """Features plus (optionally) targets and spot images of one section, aligned on barcodes. ``lazy``: the
    neighbour tiles stay in the store, read per batch (``load_features(lazy=True)``): a fold larger than
    memory trains in the memory of its batches."""
    import anndata as ad

    feats = load_features(features_path, sample, lazy=lazy)
    if spot_images_path is not None:
        feats = feats.with_spot_images(spot_images_path)
    if targets_path is None:
        return Section(sample, patient, feats, None, [])
    tgt = ad.read_h5ad(targets_path)
    index = pd.Index(feats.barcodes)
    pos = index.get_indexer(tgt.obs_names)
    if (pos < 0).any():
        missing = tgt.obs_names[pos < 0][:3].tolist()
        raise InputError(
            f"{int((pos < 0).sum())} spots with targets have no features (e.g. {missing}); "
            "were features and targets made from different files?",
            sample,
            features_path,
        )
    feats = feats.subset(pos)
    return Section(sample, patient, feats, np.asarray(tgt.X, dtype=np.float32), tgt.var_names.tolist())


def predictions_anndata(section: Section, prediction: np.ndarray, fold: int, head: str):
    import anndata as ad

    obs = pd.DataFrame(
        {"sample": section.sample, "patient": section.patient, "fold": fold},
        index=pd.Index([f"{section.sample}:{b}" for b in section.features.barcodes], name="spot"),
    )
    obs["barcode"] = section.features.barcodes
    out = ad.AnnData(
        X=prediction.astype(np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(section.genes, name="gene"))
    )
    if section.targets is not None:
        out.layers["truth"] = section.targets.astype(np.float32)
    out.layers["prediction"] = prediction.astype(np.float32)
    out.obsm["spatial"] = section.features.spatial.astype(float)
    out.obsm["array_coords"] = section.features.array_coords
    out.uns["genedml"] = {"head": head, "fold": int(fold)}
    return out


def train_fold(
    head_name: str,
    head_cfg: dict,
    folds_path,
    fold: int,
    features: dict,
    targets: dict,
    out_dir,
    spot_images: dict | None = None,
) -> dict:
    """``features`` / ``targets`` / ``spot_images`` (heads with a trainable image encoder): sample -> path.
    Writes into ``out_dir`` atomically (as one folder)."""
    t0 = time.perf_counter()
    cls = head_class(head_cfg.get("type", head_name))
    settings = cls.settings(head_cfg)
    if cls.needs_spot_images(settings) and not spot_images:
        raise InputError(
            f"head {head_name!r} trains an image encoder on the spot images (spot_encoder "
            f"{settings.get('spot_encoder')}) but none were given (--spot-images; rule spot_images)",
            None,
            folds_path,
        )
    if not cls.needs_spot_images(settings):
        spot_images = None
    train, val, test = fold_sections(folds_path, fold, features, targets, spot_images)
    t_load = time.perf_counter() - t0
    log.info(
        "fold %d: %d train / %d val / %d test sections, %d genes (loaded in %.1f s)",
        fold,
        len(train),
        len(val),
        len(test),
        len(train[0].genes),
        t_load,
    )
    head = cls(settings, seed=int(settings["seed"]))
    protocol = settings["protocol"]
    if protocol not in schema.choices("protocol"):
        raise ValueError(f"head {head_name!r}: unknown protocol {protocol!r}: {' | '.join(schema.choices('protocol'))}")
    if protocol == "reference":
        log.warning("%s, fold %d: reference protocol: selecting on the TEST fold (optimistic)", head_name, fold)
        train, select = train + val, test
        val = []
        selection = "TEST fold (reference protocol, optimistic)"
    else:
        select = val
        selection = "inner validation split of training patients" if val else "none (no validation sections)"
    t1 = time.perf_counter()
    try:
        facts = head.fit(train, select)
    except NonFiniteLoss as exc:
        raise TrainingError(f"head {head_name!r}, fold {fold}: {exc}") from None
    t_fit = time.perf_counter() - t1
    record = {
        "head": head_name,
        "type": cls.kind,
        "fold": int(fold),
        "seed": head.seed,
        "train": [s.sample for s in train],
        "val": [s.sample for s in val],
        "test": [s.sample for s in test],
        "protocol": protocol,
        "selection": selection,
        "fit": facts,
        "load_s": round(t_load, 3),
        "fit_s": round(t_fit, 3),
        "genes": len(train[0].genes),
    }
    write_fold(out_dir, head, [predictions_anndata(s, head.predict(s), fold, head_name) for s in test], record)
    log.info("fold %d: fitted %s in %.1f s", fold, head_name, t_fit)
    return facts


def fold_sections(
    folds_path, fold: int, features: dict, targets: dict, spot_images: dict | None = None
) -> tuple[list, list, list]:
    """The fold's (train, val, test) sections with features and targets (and spot images when given); every
    one predicts the same genes."""
    folds = read_folds(folds_path)
    plan = folds[folds["fold"] == fold]
    if plan.empty:
        raise InputError(f"fold {fold} is not in the fold table", None, folds_path)

    def sections(split):
        rows = plan[plan["split"] == split]
        return [
            load_section(
                r.sample,
                r.patient,
                features[r.sample],
                targets[r.sample],
                None if spot_images is None else _path_of(spot_images, r.sample, "spot images"),
            )
            for r in rows.itertuples()
        ]

    train, val, test = sections("train"), sections("val"), sections("test")
    for s in train + val + test:
        if s.genes != train[0].genes:
            raise InputError(
                "targets have a different gene list than the training sections", s.sample, targets[s.sample]
            )
    return train, val, test


def _path_of(paths: dict, sample: str, what: str):
    if sample not in paths:
        raise InputError(f"no {what} given for this sample", sample, None)
    return paths[sample]


def write_fold(out_dir, head, predictions: list, record: dict) -> None:
    """The model files, ``predictions.h5ad`` (every test section) and ``fold.json``, as one folder at once."""
    import anndata as ad

    with atomic_path(Path(out_dir)) as tmp:
        tmp.mkdir(parents=True)
        head.save(tmp)
        ad.concat(predictions, merge="same", uns_merge="same").write_h5ad(tmp / "predictions.h5ad")
        write_json(tmp / "fold.json", record)
