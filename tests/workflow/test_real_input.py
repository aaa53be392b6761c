"""Real input: the dataset registry, reference folds, the shipped gene lists against real HER2ST counts, an
Aperio SVS through the HEST reader path, sample sheets that name missing samples, and a small real run of
the pipeline from legacy-ST files (crops of the four shared HER2ST sections)."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from genedml.errors import InputError
from genedml.io.datasets import gene_list_path, reference_folds, sections, symbol_fixes
from genedml.io.sample_sheet import registry_sheet
from genedml.study.folds import FoldSpec, make_folds, resolve_fold_table
from genedml.study.genes import read_gene_list
from support.workflow import REPO, SHARED, need_shared, planned_jobs, snakemake, write_config

SHARED_CONFIG = REPO / "workflow/configs/her2st-shared.yaml"


# ------------------------------------------------------------------------------------------ registry


def test_registry_knows_the_three_datasets():
    counts = {d: (len(sections(d)), sections(d)["patient"].nunique()) for d in ("her2st", "stnet", "cscc")}
    assert counts == {"her2st": (36, 8), "stnet": (68, 23), "cscc": (12, 4)}
    sheet = registry_sheet("HER2ST", ["B4", "SPA141"], "hest_id")
    assert sheet[["sample", "patient", "section", "hest_id"]].values.tolist() == [
        ["SPA145", "B", "B4", "SPA145"],
        ["SPA141", "C", "C2", "SPA141"],
    ]
    assert registry_sheet("her2st", ["B4", "C2"], "section")["sample"].tolist() == ["B4", "C2"]
    with pytest.raises(InputError, match="has no sample 'Z9'"):
        registry_sheet("her2st", ["B4", "Z9"], "hest_id")
    with pytest.raises(InputError, match="unknown dataset"):
        registry_sheet("visium_brain", None, "hest_id")


def test_shipped_reference_folds_match_the_reference_table():
    ref_path = SHARED / "reference" / "folds_reference.tsv"
    if not ref_path.exists():
        pytest.skip(f"{ref_path} is absent")
    ref = pd.read_csv(ref_path, sep="\t", dtype=str)
    legacy = ref[ref["scheme"].str.startswith("legacy")]
    for dataset, name in [("stnet", "stnet"), ("her2st", "her2st"), ("cscc", "skin(skinst)")]:
        want = [
            sorted(p.replace("Patient ", "").strip() for p in r.split(","))
            for r in legacy[legacy["dataset"] == name].sort_values("fold")["test_patients"]
        ]
        if dataset == "cscc":
            want = [[f"P{p.lstrip('P')}" for p in g] for g in want]
        got = [sorted(r.split(",")) for r in reference_folds(dataset, "legacy")["test_patients"]]
        assert got == want, dataset


def test_reference_scheme_reproduces_stnet_membership():
    sheet = registry_sheet("stnet", None, "hest_id")
    spec, table = resolve_fold_table(FoldSpec.of(scheme="reference", val_patients=1), sheet)
    folds = make_folds(sheet, spec, table)
    test = folds[folds["split"] == "test"]
    assert folds["fold"].nunique() == 8
    assert sorted(test["sample"]) == sorted(sheet["sample"])  # every section is held out exactly once
    assert sorted(test.loc[test["fold"] == 0, "patient"].unique()) == ["BC23277", "BC23287", "BC23508"]
    assert sorted(test.loc[test["fold"] == 7, "patient"].unique()) == ["BC23944", "BC24044"]
    # sklearn's KFold(8, shuffle, 2021) over the sorted patients is NOT the reference membership
    kfold = make_folds(sheet, FoldSpec.of(scheme="group_kfold", n_folds=8, seed=2021, val_patients=0))
    kfold_test = kfold[kfold["split"] == "test"]

    def members(t):
        return sorted(tuple(sorted(t.loc[t["fold"] == f, "patient"].unique())) for f in t["fold"].unique())

    assert members(kfold_test) != members(test)
    # a partial download keeps the reference membership of the patients it has
    part = registry_sheet("her2st", ["B4", "C2", "C3"], "hest_id")
    _, table = resolve_fold_table(FoldSpec.of(scheme="reference", reference_set="triplex2025"), part, "her2st")
    assert table["test_patients"].tolist() == ["C", "B"]


def test_fold_table_by_samples_with_designs():
    sheet = registry_sheet("her2st", ["B4", "C2", "C3", "C4"], "section")
    spec = FoldSpec.of(scheme="table", table=str(REPO / "workflow/configs/her2st-shared-folds.tsv"), val_patients=1)
    spec, table = resolve_fold_table(spec, sheet)
    folds = make_folds(sheet, spec, table)
    fold0 = folds[folds["fold"] == 0].set_index("sample")
    assert fold0["split"].to_dict() == {"C2": "test", "C3": "val", "C4": "train"}  # B4 sits it out
    assert set(fold0["design"]) == {"within_patient_C"}
    fold3 = folds[folds["fold"] == 3].set_index("sample")
    assert fold3.loc["B4", "split"] == "test" and set(fold3.loc[["C2", "C3", "C4"], "split"]) <= {"train", "val"}
    assert fold3.loc["B4", "design"] == "C_to_B"
    test = folds[folds["split"] == "test"]
    assert sorted(test["sample"]) == ["B4", "C2", "C3", "C4"]
    bad = table.copy()
    bad.loc[0, "train_samples"] = "C3,C9"
    with pytest.raises(InputError, match="C9"):
        make_folds(sheet, FoldSpec.of(scheme="table"), bad)


# ------------------------------------------------------------------------------------- gene lists


def test_gene_lists_against_real_her2st_counts():
    """The corrected HER2ST list is found in every real section; the paper's spelling misses exactly the
    mistyped symbols, which the fixes table names."""
    cnts = need_shared("her2st", "ST-cnts")
    headers = []
    for path in sorted(cnts.glob("*.tsv.gz")):
        with gzip.open(path, "rt") as fh:
            headers.append(set(fh.readline().rstrip("\n").split("\t")[1:]))
    every, anywhere = set.intersection(*headers), set.union(*headers)
    corrected = read_gene_list("genedml:her2st_250")
    published = read_gene_list("genedml:her2st_250_published")
    assert len(corrected) == len(published) == 250
    assert [g for g in corrected if g not in every] == []
    assert sorted(g for g in published if g not in anywhere) == ["ARHGDI1", "HIFX", "PDPF"]
    assert [g for g in published if g in anywhere and g not in every] == ["IGF2BP2"]
    fixes = symbol_fixes("her2st")
    assert dict(zip(fixes["published"], fixes["corrected"])) == {
        "PDPF": "PPDPF",
        "HIFX": "H1FX",
        "ARHGDI1": "ARHGDIA",
        "IGF2BP2": "IGFBP2",
    }
    for dataset in ("stnet", "cscc"):  # every fix of the other lists points at a symbol HER2ST knows
        assert set(symbol_fixes(dataset)["corrected"]) <= anywhere
    with pytest.raises(InputError, match="built-in lists"):
        gene_list_path("genedml:visium_250")


# ------------------------------------------------------------------------- SVS through the reader


def test_aperio_svs_opens_through_the_hest_reader(tmp_path):
    """A HEST-layout folder whose slide is a real Aperio SVS and whose metadata has no pixel size: the
    tile stage takes the µm/px from the slide's own tags (0.499)."""
    from genedml.cli import main
    from genedml.tiles.geometry import Geometry

    svs = need_shared("wsi", "cmu-1-small-region.svs")
    root = tmp_path / "hest"
    for sub in ("wsis", "st", "metadata"):
        (root / sub).mkdir(parents=True)
    os.symlink(svs, root / "wsis" / "CMU1.svs")
    xs, ys = np.meshgrid(np.arange(300, 2000, 400), np.arange(300, 2800, 400))
    n = xs.size
    a = ad.AnnData(
        X=np.random.default_rng(0).poisson(3, (n, 5)).astype(np.int32),
        obs=pd.DataFrame(index=[f"s{i}" for i in range(n)]),
        var=pd.DataFrame(index=list("ABCDE")),
    )
    a.obsm["spatial"] = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    a.write_h5ad(root / "st" / "CMU1.h5ad")
    (root / "metadata" / "CMU1.json").write_text(json.dumps({"id": "CMU1", "st_technology": "none"}))
    out = tmp_path / "CMU1.npz"
    assert (
        main(
            [
                "tile",
                "--hest-dir",
                str(root),
                "--sample",
                "CMU1",
                "--out",
                str(out),
                "--tile-px",
                "32",
                "--target-mpp",
                "1.0",
            ]
        )
        == 0
    )
    g = Geometry.load(out)
    assert g.slide_mpp == pytest.approx(0.499, abs=1e-6)
    assert g.mpp_source == "slide tags"
    assert g.slide_dims == (2220, 2967)
    assert g.scale == pytest.approx(1.0 / 0.499)


# ----------------------------------------------------------------- sample sheets naming missing samples


def _abs_shared_config(workdir, **overrides):
    """The shipped her2st-shared config with its relative paths made absolute (tests run elsewhere)."""
    config = yaml.safe_load(SHARED_CONFIG.read_text())
    assert (REPO / config["data"]["legacy_st_dir"]).resolve() == (SHARED / "data" / "her2st").resolve()
    config["data"]["legacy_st_dir"] = str((REPO / config["data"]["legacy_st_dir"]).resolve())
    config["folds"]["table"] = str(REPO / config["folds"]["table"])
    return write_config(workdir, config, **overrides)


def test_shared_config_plans_the_whole_run(tmp_path):
    need_shared("her2st", "ST-imgs")
    proc = snakemake(tmp_path, _abs_shared_config(tmp_path), "-n")
    jobs = planned_jobs(proc)
    # ridge and the three controls (config `controls`), 4 folds
    assert jobs["import_st"] == 4 and jobs["tile"] == 4 and jobs["embed"] == 4 and jobs["train"] == 4 * 4
    assert jobs["sample_sheet"] == 1
    # a configured pixel size for one section reaches only that section's import
    proc = snakemake(tmp_path, _abs_shared_config(tmp_path, data={"mpp": {"C2": 0.7}}), "-n", "-p")
    commands = [line for line in (proc.stdout + proc.stderr).splitlines() if "genedml import-st" in line]
    assert len(commands) == 4
    assert [c for c in commands if "--mpp 0.7" in c] == [c for c in commands if "--section C2 " in c]


def test_overlay_config_runs_only_its_heads(tmp_path):
    """As a user runs it from the repository root: config.yaml (six demo heads) under the HER2ST overlay,
    whose `run_heads` keeps ridge alone; the baseline overlay adds its heads; an unknown name fails."""
    need_shared("her2st", "ST-imgs")
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")  # what the Snakefile's `configfile:` loads
    (tmp_path / "her2st").mkdir()
    her2st = _abs_shared_config(tmp_path / "her2st")
    jobs = planned_jobs(snakemake(tmp_path, tmp_path / "config.yaml", str(her2st), "-n"))
    assert jobs["train"] == 4 * 4 and "gene_semantics" not in jobs  # ridge and the controls, 4 folds
    baselines = REPO / "workflow/configs/baseline-heads-cpu.yaml"
    jobs = planned_jobs(snakemake(tmp_path, tmp_path / "config.yaml", str(her2st), str(baselines), "-n"))
    assert jobs["train"] == (7 + 3) * 4 and jobs["gene_semantics"] == 1
    bad = write_config(tmp_path / "her2st", yaml.safe_load(her2st.read_text()), run_heads=["ridge", "ridg"])
    proc = snakemake(tmp_path, tmp_path / "config.yaml", str(bad), "-n", check=False)
    assert proc.returncode != 0 and "run_heads names ['ridg']" in proc.stdout + proc.stderr


def test_sample_sheet_naming_missing_samples_fails_before_running(tmp_path):
    need_shared("her2st", "ST-imgs")
    # a registry list naming a section the dataset does not have
    proc = snakemake(tmp_path, _abs_shared_config(tmp_path, samples=["B4", "Z9"]), "-n", check=False)
    assert proc.returncode != 0 and "dataset her2st has no sample 'Z9'" in proc.stdout + proc.stderr
    # a known section whose files are not in the folder (C1 has counts but no image here)
    proc = snakemake(tmp_path, _abs_shared_config(tmp_path, samples=["B4", "C1"]), "-n", check=False)
    assert proc.returncode != 0 and "C1" in proc.stdout + proc.stderr and "not found" in proc.stdout + proc.stderr
    # a TSV sample sheet naming a sample that is not in the HEST folder
    hest = tmp_path / "hest"
    (hest / "st").mkdir(parents=True)
    sheet = tmp_path / "sheet.tsv"
    sheet.write_text("sample\tpatient\tdataset\nSPA145\tB\ther2st\n")
    cfg = _abs_shared_config(
        tmp_path,
        samples=str(sheet),
        data={"source": "hest", "hest_dir": str(hest)},
        folds={"scheme": "leave_one_sample_out", "table": None},
    )
    proc = snakemake(tmp_path, cfg, "-n", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "sample 'SPA145'" in text and str(hest / "st" / "SPA145.h5ad") in text
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------- a small real run, legacy ST -> report


@pytest.mark.pipeline
def test_small_real_run_from_legacy_files(tmp_path):
    """Crops of B4 and C2 through rules sample_sheet and import_st, the reference HER2ST folds (leave one
    patient out, restricted to B and C) and the ridge head, to summary.tsv and the report, which must render
    in Chromium (real tissue; random-init encoder at tiny tiles, so the numbers mean nothing). The full-size
    run of the four sections is the opt-in test_report.py::test_her2st_report_renders_in_chromium."""
    from support.real_crops import make_legacy_crop

    src = need_shared("her2st", "ST-imgs").parent
    legacy = tmp_path / "legacy"
    for section in ("B4", "C2"):
        assert make_legacy_crop(src, section, legacy, side=1400) >= 10
    cfg = _abs_shared_config(
        tmp_path,
        samples=["B4", "C2"],
        tiles={"tile_px": 16, "target_mpp": 4.0},
        report={"pcc_h_genes": 20},
        encoder={"batch_size": 500},
        folds={"scheme": "reference", "table": None},
        controls=[],  # their rows are tested on the demo run and on the full-size HER2ST run
    )
    config = yaml.safe_load(cfg.read_text())
    config["data"]["legacy_st_dir"] = str(legacy)
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(tmp_path, cfg, "--cores", "2", "results/metrics/summary.tsv", "results/report.md")
    res = tmp_path / "results"
    assert pd.read_csv(res / "samples.tsv", sep="\t")["hest_id"].tolist() == ["SPA145", "SPA141"]
    meta = json.loads((res / "import/hest/metadata/C2.json").read_text())
    assert 0.6 < meta["pixel_size_um_estimated"] < 0.8 and meta["hest_id"] == "SPA141"
    assert "estimated from the 200 µm spot pitch" in (res / "logs/import_st/C2.log").read_text()
    folds = pd.read_csv(res / "folds/folds.tsv", sep="\t")
    assert folds[folds["split"] == "test"][["fold", "sample"]].values.tolist() == [[0, "B4"], [1, "C2"]]
    per_section = pd.read_csv(res / "metrics/ridge/per_section.tsv", sep="\t")
    assert sorted(per_section["sample"]) == ["B4", "C2"]
    assert {"PCC_A", "PCC_H"} <= set(per_section.columns) and per_section["PCC_A"].notna().all()
    summary = pd.read_csv(res / "metrics/summary.tsv", sep="\t")
    assert (summary["target_recipe"] == "reference").all()
    assert len(pd.read_csv(res / "genes/genes.tsv", sep="\t")) == 250
    # the report of the real run in a real browser: the thumbnail-backed maps of both sections load, Table 1
    # puts this run beside the published rows, and the per-section table lists the held-out sections
    from test_report import browse_report, check_screenshot

    seen, shot = browse_report(res / "report", tmp_path)
    # the PCC distribution, one spatial map a section, the encoder x head matrix and the per-gene ceiling
    assert len(seen["images"]) == 1 + 2 + 2
    assert all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]
    assert seen["thisRun"] == 1 and seen["published"] == 30
    assert seen["tables"]["per-section-ridge"] == 2 and seen["tables"]["folds"] == 2
    scores = json.loads((res / "figures/ridge/spatial_pcc.json").read_text())
    assert sorted(scores["sections"]) == ["B4", "C2"] and scores["genes"] == ["GNAS", "FASN", "ERBB2"]
    check_screenshot(shot)
