"""A bare slide through the pipeline: the real Aperio SVS (skin H&E, no expression) predicted by the demo
run's fold models with the same encoder: tissue mask, virtual Visium lattice, fold ensemble, OOD scores,
maps and the report in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess

import anndata as ad
import numpy as np
import pytest
import yaml
from scipy.spatial import cKDTree
from test_report import browse_report

from support.workflow import BIN, need_shared, planned_jobs, snakemake

SVS = ("wsi", "cmu-1-small-region.svs")
SLIDE = "cmu1"


@pytest.fixture(scope="module")
def slide_run(demo_pipeline, tmp_path_factory):
    """The demo run (6 sections, ridge) with a second head of 2 epochs, and the SVS as a bare slide."""
    svs = need_shared(*SVS)
    src, config = demo_pipeline
    work = tmp_path_factory.mktemp("slides") / "work"
    shutil.copytree(src, work, symlinks=True)
    table = work / "slides.tsv"
    table.write_text(f"sample\tslide\n{SLIDE}\t{svs}\n")
    cfg = yaml.safe_load(config.read_text())
    cfg["heads"]["stnet"] = {"type": "stnet", "hidden": 32, "epochs": 3, "patience": 3, "seed": 0}
    cfg["slides"] = {"list": str(table), "maps": ["GNAS", "FASN"]}
    path = work / "slides_config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    plan = planned_jobs(snakemake(work, path, "-n"))
    proc = snakemake(work, path, "--cores", "2")
    return work, path, plan, proc.stdout + proc.stderr


@pytest.mark.pipeline
def test_the_slide_runs_the_training_runs_steps_only_for_itself(slide_run):
    _, _, plan, _ = slide_run
    assert plan["virtual_spots"] == 1 and plan["tile"] == 1 and plan["embed"] == 1  # the slide alone
    assert plan["ood_reference"] == 1 and plan["ood_score"] == 1
    assert plan["predict"] == 2 and plan["slide_maps"] == 2  # ridge and stnet


@pytest.mark.pipeline
def test_tissue_mask_and_lattice(slide_run):
    work, _, _, _ = slide_run
    meta = json.loads((work / f"results/slides/metadata/{SLIDE}.json").read_text())
    # the crop is a piece of skin filling most of the field (measured: see docs/slides.md)
    assert 0.3 < meta["tissue_fraction"] < 0.95, meta
    st = ad.read_h5ad(work / f"results/slides/st/{SLIDE}.h5ad")
    xy = np.asarray(st.obsm["spatial"], float)
    d, _ = cKDTree(xy).query(xy, k=2)
    mpp = meta["pixel_size_um_estimated"]
    assert mpp == pytest.approx(0.499, abs=0.001)  # the SVS's own µm/px
    assert np.median(d[:, 1]) * mpp == pytest.approx(100.0, rel=0.01)  # the demo's Visium pitch
    assert len(st) == meta["n_spots"] > 50


@pytest.mark.pipeline
def test_predictions_open_in_scanpy_with_every_layer(slide_run):
    import scanpy as sc

    work, _, _, _ = slide_run
    for head in ("ridge", "stnet"):
        adata = ad.read_h5ad(work / f"results/predict/{head}/{SLIDE}.h5ad")
        folds = [k for k in adata.layers if k.startswith("fold")]
        assert len(folds) == 3 and {"prediction", "std"} <= set(adata.layers)
        stack = np.stack([adata.layers[k] for k in folds])
        np.testing.assert_allclose(adata.X, stack.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(adata.layers["std"], stack.std(0), rtol=1e-4, atol=1e-6)
        assert adata.layers["std"].mean() > 0  # the fold models differ
        assert "ood_score" in adata.obs and np.isfinite(adata.obs["ood_score"]).all()
        sc.pl.spatial(adata, library_id=SLIDE, color=adata.var_names[0], show=False)


@pytest.mark.pipeline
def test_ood_of_held_out_sections_is_below_the_svs(slide_run, tmp_path):
    work, _, _, text = slide_run
    svs = json.loads((work / f"results/ood/{SLIDE}.json").read_text())
    held_out = []
    for sample in ("S1", "S3", "S5"):
        out = tmp_path / f"{sample}.json"
        subprocess.run(
            [str(BIN / "genedml"), "ood-score", "--reference", str(work / "results/ood/reference")]
            + ["--features", str(work / f"results/features/resnet18/{sample}.zarr"), "--sample", sample]
            + ["--out-tsv", str(tmp_path / f"{sample}.tsv"), "--out-json", str(out), "--held-out-only"],
            check=True,
            capture_output=True,
        )
        held_out.append(json.loads(out.read_text()))
    svs_median = svs.get("summary", svs)["median"]
    for h in held_out:
        assert h.get("summary", h)["median"] < svs_median, (h, svs)


@pytest.mark.pipeline
def test_report_shows_the_slide_in_chromium(slide_run, tmp_path):
    work, _, _, _ = slide_run
    seen, _ = browse_report(work / "results/report", tmp_path)
    broken = [i["src"] for i in seen["images"] if not (i["complete"] and i["width"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    srcs = [i["src"] for i in seen["images"]]
    assert f"figures/slides/qc_{SLIDE}.png" in srcs
    assert {f"figures/slides/{h}_{SLIDE}.png" for h in ("ridge", "stnet")} <= set(srcs)
    assert seen["tables"]["unlabelled"] == 1


@pytest.mark.pipeline
def test_predict_slide_command_reuses_the_run(slide_run):
    """`genedml predict-slide` on another id of the same slide: only that slide's jobs run."""
    work, path, _, _ = slide_run
    svs = need_shared(*SVS)
    trained = {p: p.stat().st_mtime_ns for p in (work / "results/heads").rglob("fold.json")}
    proc = subprocess.run(
        [str(BIN / "genedml"), "predict-slide", "--slide", str(svs), "--sample", "cmu1_again"]
        + ["--configfile", str(path), "--heads", "ridge", "--cores", "2", "--directory", str(work)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in trained} == trained  # no head retrained
    a = ad.read_h5ad(work / "results/predict/ridge/cmu1_again.h5ad")
    b = ad.read_h5ad(work / f"results/predict/ridge/{SLIDE}.h5ad")
    np.testing.assert_allclose(a.X, b.X, rtol=1e-5, atol=1e-6)  # the same slide, the same predictions
    assert (work / "results/slides/maps/ridge/cmu1_again.png").exists()
