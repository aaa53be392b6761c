# Helpers and config validation shared by every rule.
import json
import os
import re

import pandas as pd
from snakemake.utils import validate

from genedml.io.datasets import config_sample_sheet
from genedml.study.folds import make_folds, resolve_fold_table
from genedml.io.hest import SamplePaths
from genedml.heads.predict import predict_plan


def select_heads(heads, keep):
    """The `heads` mapping restricted to `keep` (config `run_heads`; None keeps every head), in keep's order."""
    if not keep:
        return heads
    unknown = [h for h in keep if h not in heads]
    if unknown:
        raise ValueError(f"run_heads names {unknown}, which are not under `heads` ({', '.join(heads)})")
    return {h: heads[h] for h in keep}


validate(config, schema="../schemas/config.schema.yaml")

# The sample sheet: the TSV named by `samples`, or built from genedml's dataset registry (`dataset` plus a
# list of samples, or every sample of the dataset in the data folder); rule sample_sheet then writes it.
SHEET, _SHEET_TSV = config_sample_sheet(config)
SHEET_PATH = _SHEET_TSV or "results/samples.tsv"
for _, _row in SHEET.iterrows():
    validate(_row.to_dict(), schema="../schemas/samples.schema.yaml")
SAMPLES = SHEET["sample"].tolist()
PATIENT = dict(zip(SHEET["sample"], SHEET["patient"]))
ENCODER = config["encoder"]["name"]
# An overlay config (--configfile) cannot remove config.yaml's heads, as Snakemake merges mappings key by
# key; `run_heads` names the heads to keep. Pruning config["heads"] keeps every later use consistent.
config["heads"] = select_heads(config["heads"], config.get("run_heads"))
HEADS = list(config["heads"])
DEMO_DIR = "results/demo/hest"
# Sections to predict with the trained heads (config `predict`; see predict.smk): no counts needed.
PREDICT_SAMPLES, PREDICT_HEST_DIR, PREDICT_HEADS = predict_plan(config, SAMPLES, HEADS)

# legacy_st: sections are converted into the HEST layout under IMPORT_DIR (rule import_st)
IMPORT_DIR = "results/import/hest"
if config["data"]["source"] == "demo":
    HEST_DIR = DEMO_DIR
elif config["data"]["source"] == "legacy_st":
    HEST_DIR = IMPORT_DIR
else:
    HEST_DIR = config["data"].get("hest_dir")
    if not HEST_DIR:
        raise ValueError("config data.source is 'hest' but data.hest_dir is not set")


# scheme 'reference' becomes the shipped fold table of the dataset (config `dataset` or the sheet's column)
_FOLD_SCHEME, _FOLD_TABLE = resolve_fold_table(
    config["folds"]["scheme"],
    config["folds"].get("table"),
    SHEET,
    config.get("dataset"),
    config["folds"].get("reference_set", "legacy"),
)
# The fold plan is computed here too (the folds rule writes the same table) so the DAG knows the folds.
FOLD_PLAN = make_folds(
    SHEET,
    _FOLD_SCHEME,
    config["folds"].get("n_folds", 0),
    config["folds"].get("seed"),
    config["folds"].get("val_patients", 1),
    _FOLD_TABLE,
)
FOLDS = sorted(FOLD_PLAN["fold"].unique().tolist())


wildcard_constraints:
    sample="|".join(re.escape(s) for s in SAMPLES + PREDICT_SAMPLES),
    head="|".join(re.escape(h) for h in HEADS),
    encoder=re.escape(ENCODER),
    fold=r"\d+",


def sample_files(wildcards):
    """Slide, expression and metadata of one sample in the HEST-1k layout."""
    if wildcards.sample in PREDICT_SAMPLES:
        paths = SamplePaths.in_hest_dir(PREDICT_HEST_DIR, wildcards.sample)
        return {"slide": str(paths.slide), "st": str(paths.st), "metadata": str(paths.metadata)}
    if config["data"]["source"] in ("demo", "legacy_st"):  # made by rule demo_data / import_st
        return {
            "slide": f"{HEST_DIR}/wsis/{wildcards.sample}.tif",
            "st": f"{HEST_DIR}/st/{wildcards.sample}.h5ad",
            "metadata": f"{HEST_DIR}/metadata/{wildcards.sample}.json",
        }
    paths = SamplePaths.in_hest_dir(HEST_DIR, wildcards.sample)
    return {"slide": str(paths.slide), "st": str(paths.st), "metadata": str(paths.metadata)}


def st_file(sample):
    return sample_files(type("W", (), {"sample": sample})())["st"]


def features_path(sample):
    return f"results/features/{ENCODER}/{sample}.zarr"


def encoder_identity():
    """The encoder settings that change the features; run-time knobs (batch size, device) are left out."""
    keep = ("name", "timm_name", "weights", "weights_sha256", "allow_random_init", "init_seed", "model_kwargs", "precision",
            "cache_local_tokens")
    return json.dumps({k: config["encoder"][k] for k in keep if k in config["encoder"]}, sort_keys=True)


# Heads whose gene queries are text embeddings of the genes (rule gene_semantics makes them once per run).
SEMANTIC_HEAD_TYPES = {"dkan"}
GENE_SEMANTICS = "results/genes/semantics.npz"


def gene_semantics_config():
    """The config's gene_semantics section with its defaults (the section is optional)."""
    defaults = {"model": "minilm", "descriptions": None, "template": "{symbol}", "missing_description": "symbol"}
    return {**defaults, **(config.get("gene_semantics") or {})}


def gene_semantics_file(head):
    """The gene-embedding file a head reads ('' for heads that need none); a head's own setting wins."""
    cfg = config["heads"][head]
    if cfg.get("type") not in SEMANTIC_HEAD_TYPES or cfg.get("gene_queries", "semantic") != "semantic":
        return ""
    return cfg.get("gene_embeddings") or GENE_SEMANTICS


def head_params(wildcards):
    cfg = dict(config["heads"][wildcards.head])
    cfg.pop("report", None)  # how the report shows the head: never retrains it (rule report_markdown reads it)
    if gene_semantics_file(wildcards.head):
        cfg["gene_embeddings"] = gene_semantics_file(wildcards.head)
    return json.dumps(cfg, sort_keys=True)


def fold_inputs(kind):
    def paths(wildcards):
        if kind == "features":
            return [features_path(s) for s in SAMPLES]
        return [f"results/targets/{s}.h5ad" for s in SAMPLES]

    return paths


def sample_path_pairs(kind):
    if kind == "features":
        return " ".join(f"{s}={features_path(s)}" for s in SAMPLES)
    return " ".join(f"{s}=results/targets/{s}.h5ad" for s in SAMPLES)


# Legacy-ST import (rules in import.smk): where a sample's legacy files are and how to convert it.
LEGACY_DIR = config["data"].get("legacy_st_dir")


def sheet_value(sample, column):
    """A sample's value in an optional sample-sheet column ('' when absent)."""
    if column not in SHEET.columns:
        return ""
    value = SHEET.loc[SHEET["sample"] == sample, column].iloc[0]
    return value if isinstance(value, str) else ""


def legacy_section(sample):
    """Section name of a sample in the legacy files (sample-sheet column `section`, else the sample name)."""
    return sheet_value(sample, "section") or sample


def legacy_files(wildcards):
    from genedml.io.legacy_st import LegacyFiles

    files = LegacyFiles.find(LEGACY_DIR, legacy_section(wildcards.sample))
    return {"counts": str(files.counts), "spots": str(files.spots), "image": str(files.image)}


def import_mpp(wildcards):
    """data.mpp: one µm/px for every section, a mapping sample -> µm/px, or null (from the spot pitch)."""
    mpp = config["data"].get("mpp")
    if isinstance(mpp, dict):
        mpp = mpp.get(wildcards.sample)
    return f"--mpp {float(mpp)}" if mpp else ""
