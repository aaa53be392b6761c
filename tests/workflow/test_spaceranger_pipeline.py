"""A user's own Space Ranger samples through the whole pipeline (import, tile, embed, train, report): Visium in
both positions formats, and Visium HD bins with and without pooling into pseudo-spots."""

import json
import time

import anndata as ad
import pandas as pd
import pytest
import yaml

from support.spaceranger import write_spaceranger_outs, write_visium_hd_outs
from support.workflow import REPO, need_shared, snakemake, write_config

pytestmark = pytest.mark.pipeline
# (sample, patient, Space Ranger >= 2.0 positions with a header, spots marked outside the tissue)
SAMPLES = [("V1", "PA", True, 3), ("V2", "PB", False, 0), ("V3", "PC", True, 0)]


def run_config(work, sheet, data: dict):
    """A tiny config (ridge only, no controls, 32 px tiles at 2 µm/px) for the sample sheet ``sheet`` and ``data`` slice."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["heads"] = {"ridge": config["heads"]["ridge"]}
    config["controls"] = []  # the controls' rows are tested on the demo run (tests/workflow/test_report.py)
    return write_config(
        work,
        config,
        samples=str(sheet),
        data=data,
        tiles={"tile_px": 32, "target_mpp": 2.0},
        genes={"n_top": 40},
        report={"pcc_h_genes": 20},
    )


def run_samples(work, inputs: dict, data: dict) -> float:
    """Run the pipeline on Space Ranger ``inputs`` (sample -> (patient, outs, image)); the seconds it took."""
    sheet = work / "samples.tsv"
    sheet.write_text(
        "sample\tpatient\tdataset\tspaceranger\timage\n"
        + "".join(f"{s}\t{p}\tvisium_crop\t{o}\t{i}\n" for s, (p, o, i) in inputs.items())
    )
    path = run_config(work, sheet, {"source": "spaceranger", **data})
    t0 = time.perf_counter()
    snakemake(work, path, "--cores", "2", "--set-threads", "train=1")
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = need_shared("squidpy_visium_crop").parent
    work = tmp_path_factory.mktemp("spaceranger")
    inputs = {}
    for sample, patient, header, outside in SAMPLES:
        outs, image = write_spaceranger_outs(data, work / "inputs" / sample, header=header, outside=outside)
        inputs[sample] = (patient, outs, image)
    return work, run_samples(work, inputs, {})


def test_space_ranger_samples_run_to_the_report(run):
    work, seconds = run
    summary = pd.read_csv(work / "results/metrics/summary.tsv", sep="\t")
    pcc = summary[(summary["metric"] == "PCC_A") & (summary["head"] == "ridge")].iloc[0]
    assert pcc["n_folds"] == len(SAMPLES)
    assert (work / "results/report.md").exists() and (work / "results/report/index.html").exists()
    print(f"Space Ranger pipeline run: {seconds:.0f} s")


def test_each_sample_was_converted_with_its_pixel_size_and_tissue_spots(run):
    work, _ = run
    for sample, _, header, outside in SAMPLES:
        meta = json.loads((work / f"results/import/spaceranger/hest/metadata/{sample}.json").read_text())
        assert meta["st_technology"] == "Visium" and meta["pixel_size_um_estimated"] == pytest.approx(
            0.7246, rel=1e-3
        )  # 100 µm / the crop's 138 px pitch
        assert meta["imported_from"]["positions"] == ("tissue_positions.csv" if header else "tissue_positions_list.csv")
        targets = ad.read_h5ad(work / f"results/targets/{sample}.h5ad")
        assert targets.n_obs == 49 - outside  # in_tissue 0 spots left out of targets as of tiles
        tile_log = (work / f"results/logs/tile/{sample}.log").read_text()
        assert (f"{outside} of 49 spots are outside the tissue" in tile_log) == bool(outside)


def test_the_report_audits_each_samples_geometry(run):
    work, _ = run
    audit = pd.read_csv(work / "results/report/tables/geometry.tsv", sep="\t").set_index("sample")
    assert set(audit.index) == {s for s, *_ in SAMPLES}
    v1 = audit.loc["V1"]
    assert v1["from"] == "metadata" and v1["technology"] == "Visium" and v1["spot Ø µm"] == 55
    assert v1["crop µm"] == pytest.approx(64.0) and v1["neighbourhood µm"] == pytest.approx(320.0)  # 32 px at 2 µm/px
    assert v1["spot / crop area"] == pytest.approx(3.14159 * 27.5**2 / 64.0**2, rel=1e-3)
    assert (v1["spots used"], v1["left out: outside tissue"]) == (46, 3)
    assert "Geometry audit" in (work / "results/report.md").read_text()


@pytest.mark.parametrize("pseudo_spot_um", [None, 48.0], ids=["16um-bins", "pooled-48um"])
def test_visium_hd_runs_on_its_bins_or_pooled_pseudo_spots(pseudo_spot_um, tmp_path):
    data = need_shared("squidpy_visium_crop").parent
    window = 160.0 if pseudo_spot_um is None else 240.0  # 10 x 10 bins, or 5 x 5 pseudo-spots of 3 x 3 bins
    outs, image = write_visium_hd_outs(data, tmp_path / "inputs", bin_um=16, window_um=window)
    inputs = {s: (p, outs, image) for s, p in (("H1", "PA"), ("H2", "PB"), ("H3", "PC"))}
    seconds = run_samples(tmp_path, inputs, {"hd_bin_um": 16, "hd_pseudo_spot_um": pseudo_spot_um})
    assert (tmp_path / "results/report.md").exists()
    summary = pd.read_csv(tmp_path / "results/metrics/summary.tsv", sep="\t")
    assert summary.loc[(summary["metric"] == "PCC_A") & (summary["head"] == "ridge"), "n_folds"].iloc[0] == 3
    meta = json.loads((tmp_path / "results/import/spaceranger/hest/metadata/H1.json").read_text())
    targets_h1 = ad.read_h5ad(tmp_path / "results/targets/H1.h5ad")
    assert targets_h1.n_obs == (100 if pseudo_spot_um is None else 25)
    assert meta["spot_diameter"] == (16 if pseudo_spot_um is None else 48)
    print(f"Visium HD pipeline run ({'bins' if pseudo_spot_um is None else 'pooled'}): {seconds:.0f} s")


def test_xenium_like_pseudo_spots_run_to_the_report(demo_hest, tmp_path):
    """HEST-shaped pseudo-spot samples (square lattice, no array coordinates): source hest, whole pipeline."""
    from support.pseudo_spots import write_xenium_like

    hest = tmp_path / "hest"
    for sample in ("S1", "S2", "S3"):
        write_xenium_like(demo_hest, sample, hest)
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample\tpatient\tdataset\nS1\tPA\txenium_like\nS2\tPB\txenium_like\nS3\tPC\txenium_like\n")
    path = run_config(tmp_path, sheet, {"source": "hest", "hest_dir": str(hest)})
    t0 = time.perf_counter()
    snakemake(tmp_path, path, "--cores", "2", "--set-threads", "train=1")
    audit = pd.read_csv(tmp_path / "results/report/tables/geometry.tsv", sep="\t").set_index("sample")
    assert (audit["technology"] == "Xenium").all() and (audit["pitch µm"] == 55).all()
    assert "square lattice" in (tmp_path / "results/logs/tile/S1.log").read_text()
    targets = ad.read_h5ad(tmp_path / "results/targets/S1.h5ad")
    assert targets.uns["genedml_targets"]["grid"] == "square"  # Chebyshev label smoothing on the lattice
    print(f"Xenium-like pipeline run: {time.perf_counter() - t0:.0f} s")
