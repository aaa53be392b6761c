# Helpers and config validation shared by every rule.
import json
import os
import re

import pandas as pd
from snakemake.utils import validate

from genedml.folds import make_folds, read_sample_sheet
from genedml.hest import SamplePaths


validate(config, schema="../schemas/config.schema.yaml")

SHEET = read_sample_sheet(config["samples"])
for _, _row in SHEET.iterrows():
    validate(_row.to_dict(), schema="../schemas/samples.schema.yaml")
SAMPLES = SHEET["sample"].tolist()
PATIENT = dict(zip(SHEET["sample"], SHEET["patient"]))
ENCODER = config["encoder"]["name"]
HEADS = list(config["heads"])
DEMO_DIR = "results/demo/hest"

if config["data"]["source"] == "demo":
    HEST_DIR = DEMO_DIR
else:
    HEST_DIR = config["data"].get("hest_dir")
    if not HEST_DIR:
        raise ValueError("config data.source is 'hest' but data.hest_dir is not set")


def _fold_table():
    path = config["folds"].get("table")
    if not path:
        return None
    table = pd.read_csv(path, sep="\t", dtype=str)
    table["fold"] = table["fold"].astype(int)
    return table


# The fold plan is computed here too (the folds rule writes the same table) so the DAG knows the folds.
FOLD_PLAN = make_folds(
    SHEET,
    config["folds"]["scheme"],
    config["folds"].get("n_folds", 0),
    config["folds"].get("seed"),
    config["folds"].get("val_patients", 1),
    _fold_table(),
)
FOLDS = sorted(FOLD_PLAN["fold"].unique().tolist())


wildcard_constraints:
    sample="|".join(re.escape(s) for s in SAMPLES),
    head="|".join(re.escape(h) for h in HEADS),
    encoder=re.escape(ENCODER),
    fold=r"\d+",


def sample_files(wildcards):
    """Slide, expression and metadata of one sample in the HEST-1k layout."""
    if config["data"]["source"] == "demo":
        return {
            "slide": f"{DEMO_DIR}/wsis/{wildcards.sample}.tif",
            "st": f"{DEMO_DIR}/st/{wildcards.sample}.h5ad",
            "metadata": f"{DEMO_DIR}/metadata/{wildcards.sample}.json",
        }
    paths = SamplePaths.in_hest_dir(HEST_DIR, wildcards.sample)
    return {"slide": str(paths.slide), "st": str(paths.st), "metadata": str(paths.metadata)}


def st_file(sample):
    return sample_files(type("W", (), {"sample": sample})())["st"]


def features_path(sample):
    return f"results/features/{ENCODER}/{sample}.zarr"


def encoder_identity():
    """The encoder settings that change the features; run-time knobs (batch size, device) are left out."""
    keep = ("name", "timm_name", "weights", "weights_sha256", "allow_random_init", "init_seed", "model_kwargs", "precision")
    return json.dumps({k: config["encoder"][k] for k in keep if k in config["encoder"]}, sort_keys=True)


def head_params(wildcards):
    return json.dumps(config["heads"][wildcards.head], sort_keys=True)


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
