"""The paper configs (workflow/configs/paper/): Snakemake's dry-run plan of each on a HEST-1k-shaped folder.

The folder holds empty placeholder files named by the real HEST ids of the dataset (``wsis/{id}.tif``,
``st/{id}.h5ad``, ``metadata/{id}.json``): the plan is made when Snakemake parses the rules, and all it reads of
the data then is which files exist (the sample sheet is built from the ``st/`` files present, and every sample's
three files must exist). The UNI weights file is an input of the embed rule, so the dry run needs it to exist:
a placeholder in the test's folder stands in for it. The ids, patients and reference folds the plans are
checked against are read from the team's reference tables in ``../shared/reference`` (the tests skip without
them), independently of the copies genedml ships.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from genedml.pipeline import schema
from support.workflow import REPO, SHARED, planned_jobs, snakemake

PAPER = REPO / "workflow" / "configs" / "paper"
REFERENCE = SHARED / "reference"
# genedml's dataset -> its name in the reference tables (ids table, legacy fold scheme)
NAMES = {"her2st": ("HER2ST", "her2st"), "stnet": ("STNet", "stnet"), "cscc": ("cSCC", "skin(skinst)")}
N_CONTROLS = len(schema.part("controls")["default"])  # the floors every run trains beside its heads
N_FOLDS = {"her2st": 8, "stnet": 8, "cscc": 4}  # the reference code's folds (the task's statement of them)
PAPER_K = {"her2st": 18, "stnet": 90, "cscc": 25}  # the paper's number of groups per dataset
DATASETS = list(NAMES)


def reference_table(name: str) -> pd.DataFrame:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference tables not available: {path} is absent (the team's shared folder beside this checkout)")
    return pd.read_csv(path, sep="\t", dtype=str)


def short_patient(dataset: str, label: str) -> str:
    """The ids table's patient label as the fold table writes it: 'Patient A' -> A, 'Patient 2' -> P2 (cSCC)."""
    label = label.strip()
    if label.startswith("Patient "):
        label = label[len("Patient ") :]
        return f"P{label}" if dataset == "cscc" else label
    return label


def hest_ids(dataset: str) -> pd.DataFrame:
    """id, patient (fold-table label) of every section of the dataset in the reference ids table."""
    table = reference_table("hest_ids_her2st_stnet_cscc.tsv")
    rows = table[table["dataset"] == NAMES[dataset][0]]
    return pd.DataFrame({"id": rows["id"], "patient": [short_patient(dataset, p) for p in rows["patient"]]})


def reference_folds(dataset: str) -> list[set[str]]:
    """Test patients of each fold of the reference code, in fold order."""
    table = reference_table("folds_reference.tsv")
    rows = table[table["scheme"].str.startswith("legacy") & (table["dataset"] == NAMES[dataset][1])]
    rows = rows.assign(fold=rows["fold"].astype(int)).sort_values("fold")
    return [set(p.strip() for p in r.split(",")) for r in rows["test_patients"]]


def paper_config(dataset: str, ablation: bool = False) -> Path:
    return PAPER / (f"{dataset}-ablation.yaml" if ablation else f"{dataset}.yaml")


def run_heads(path: Path) -> list[str]:
    return yaml.safe_load(path.read_text())["run_heads"]


@pytest.fixture(scope="module", params=DATASETS)
def paper_run(request, tmp_path_factory):
    """(dataset, workdir, local overlay, ids): a HEST-1k-shaped folder of placeholders for every section of
    the dataset, a placeholder weights file, config.yaml in the workdir (Snakemake merges it under the paper
    config, as when a user runs from the repository root) and an overlay pointing the paper config at both."""
    dataset = request.param
    ids = hest_ids(dataset)
    root = tmp_path_factory.mktemp(f"paper_{dataset}")
    hest = root / "hest"
    for kind, suffix in (("wsis", ".tif"), ("st", ".h5ad"), ("metadata", ".json")):
        (hest / kind).mkdir(parents=True)
        for i in ids["id"]:
            (hest / kind / f"{i}{suffix}").touch()
    weights = root / "uni_pytorch_model.bin"  # placeholder: the embed rule lists the weights as an input
    weights.touch()
    resnet = root / "tenpercent_resnet18.ckpt"  # placeholder: so do the pixel heads' train jobs
    resnet.touch()
    work = root / "work"
    work.mkdir()
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    local = root / "local.yaml"
    spot = {"spot_encoder_weights": str(resnet)}
    local.write_text(
        yaml.safe_dump(
            {
                "data": {"hest_dir": str(hest)},
                "encoder": {"weights": str(weights)},
                "heads": {"paper-triplex": spot, "paper-dkan": spot},
            }
        )
    )
    return dataset, work, local, ids


def dry_run(work: Path, *configfiles: Path):
    proc = snakemake(work, configfiles[0], *map(str, configfiles[1:]), "-n")
    return planned_jobs(proc), proc.stdout + proc.stderr


def test_paper_config_plan(paper_run):
    dataset, work, local, ids = paper_run
    config = paper_config(dataset)
    jobs, text = dry_run(work, config, local)
    n = len(ids)
    heads = run_heads(config)
    assert len(heads) == 5, heads  # Gene-DML and the four baselines
    assert jobs["tile"] == jobs["embed"] == jobs["targets"] == jobs["thumbnail"] == n
    assert jobs["spot_images"] == n  # once per section, for the TRIPLEX and DKAN ResNet-18
    assert jobs["train"] == N_FOLDS[dataset] * (len(heads) + N_CONTROLS)  # the controls are rows too
    assert jobs["evaluate"] == len(heads) + N_CONTROLS
    assert jobs["select_genes"] == jobs["folds"] == jobs["report_markdown"] == 1
    embedded = set(re.findall(r"results/features/uni/([A-Za-z0-9_.-]+)\.zarr", text))
    assert embedded == set(ids["id"])  # every section of the dataset, with the UNI encoder


def test_paper_config_folds_are_the_reference_folds(paper_run):
    """The plan's test sections per fold are those of the reference code's folds (read from the shared table
    and the shared ids table, not from genedml's copies); every section sits with its own patient."""
    from genedml.pipeline.plan import RunPlan
    from genedml.pipeline.schema import resolved_config

    dataset, work, local, ids = paper_run
    config = yaml.safe_load(resolved_config([str(work / "config.yaml"), str(paper_config(dataset)), str(local)]))
    plan = RunPlan(config)
    folds = plan.fold_plan
    expected_patient = dict(zip(ids["id"], ids["patient"]))
    assert dict(zip(plan.sheet["sample"], plan.sheet["patient"])) == expected_patient
    tests = [set(g.loc[g["split"] == "test", "sample"]) for _, g in folds.groupby("fold")]
    reference = reference_folds(dataset)
    assert len(tests) == len(reference) == N_FOLDS[dataset]
    expected = [{i for i, p in expected_patient.items() if p in patients} for patients in reference]
    assert tests == expected
    for k, group in folds.groupby("fold"):  # nothing of a test patient is trained on
        test_patients = set(group.loc[group["split"] == "test", "patient"])
        assert not test_patients & set(group.loc[group["split"] != "test", "patient"]), k


@pytest.mark.parametrize("dataset", DATASETS)
def test_paper_heads_resolve_to_the_published_settings(dataset):
    """Merged under config.yaml (as Snakemake does), the Gene-DML head keeps the paper's size and preset:
    none of the demo's settings of its heads leak into the paper heads."""
    from genedml.heads import head_class
    from genedml.pipeline.schema import merge

    config = {}
    for path in (REPO / "config.yaml", paper_config(dataset)):
        config = merge(config, yaml.safe_load(path.read_text()))
    cfg = config["heads"]["paper-genedml"]
    s = head_class(cfg["type"]).settings(cfg)
    assert (s["k"], s["epochs"], s["patience"]) == (PAPER_K[dataset], 200, 20)
    assert (s["lambda_ig"], s["tau_ig"], s["variant"]) == (0.8, 0.07, "full")
    for baseline in ("paper-triplex", "paper-dkan"):  # the papers train a ResNet-18 on the spot image
        b = head_class(config["heads"][baseline]["type"]).settings(config["heads"][baseline])
        assert b["spot_encoder"] == "resnet18" and b["spot_encoder_weights"].endswith("tenpercent_resnet18.ckpt")
    assert config["protocol"] == "reference"
    assert config["encoder"] == {**config["encoder"], "name": "uni", "precision": "fp32", "allow_random_init": False}
    assert config["tiles"] == {"tile_px": 224, "target_mpp": "native", "grid": 5}
    assert config["folds"]["scheme"] == "reference" and config["targets"]["recipe"] == "reference"
    assert config["genes"] == {**config["genes"], "list": f"genedml:{dataset}_250", "missing": "fail"}


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_paper_head_has_its_published_row(dataset):
    """Table 1 shows published rows by the run's dataset; each head's `published_as` names one of them."""
    from genedml.report.results import dataset_name, load_published

    published = load_published()
    models = set(published.loc[published["dataset"].map(dataset_name) == dataset, "model"])
    heads = yaml.safe_load(paper_config(dataset).read_text())["heads"]
    named = {h: c["report"]["published_as"] for h, c in heads.items()}
    assert named["paper-genedml"] == "Gene-DML"
    assert set(named.values()) <= models, set(named.values()) - models


def test_ablation_overlay_plan(paper_run):
    """Table 3 and the sweeps add only train / evaluate jobs: the same sections, encoder and folds."""
    from genedml.heads.presets import GENEDML_VARIANTS

    if "no-group-projection" not in GENEDML_VARIANTS:
        pytest.skip("Gene-DML variant 'no-group-projection' is not in genedml/heads/presets.py yet")
    dataset, work, local, ids = paper_run
    overlay = paper_config(dataset, ablation=True)
    heads = run_heads(overlay)
    assert set(run_heads(paper_config(dataset))) <= set(heads)
    jobs, _ = dry_run(work, paper_config(dataset), overlay, local)
    assert jobs["embed"] == jobs["tile"] == len(ids)
    assert jobs["train"] == N_FOLDS[dataset] * (len(heads) + N_CONTROLS)
    assert jobs["evaluate"] == len(heads) + N_CONTROLS


def test_baselines_overlay_runs_only_the_baseline_rows(paper_run):
    """The baselines overlay runs TRIPLEX, ST-Net, BLEEP and DKAN on the dataset's folds, nothing of Gene-DML."""
    dataset, work, local, ids = paper_run
    jobs, text = dry_run(work, paper_config(dataset), PAPER / "baselines.yaml", local)
    assert jobs["train"] == N_FOLDS[dataset] * (4 + N_CONTROLS) and jobs["evaluate"] == 4 + N_CONTROLS
    assert "paper-genedml" not in text and jobs["spot_images"] == len(ids)
