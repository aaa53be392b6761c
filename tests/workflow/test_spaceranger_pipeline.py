"""A user's own Space Ranger Visium samples through the whole pipeline: import, tile, embed, train, report."""

import json
import time

import anndata as ad
import pandas as pd
import pytest
import yaml

from support.spaceranger import write_spaceranger_outs
from support.workflow import REPO, need_shared, snakemake, write_config

pytestmark = pytest.mark.pipeline
# (sample, patient, Space Ranger >= 2.0 positions with a header, spots marked outside the tissue)
SAMPLES = [("V1", "PA", True, 3), ("V2", "PB", False, 0), ("V3", "PC", True, 0)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = need_shared("squidpy_visium_crop").parent
    work = tmp_path_factory.mktemp("spaceranger")
    rows = []
    for sample, patient, header, outside in SAMPLES:
        outs, image = write_spaceranger_outs(data, work / "inputs" / sample, header=header, outside=outside)
        rows.append(f"{sample}\t{patient}\tvisium_crop\t{outs}\t{image}\n")
    sheet = work / "samples.tsv"
    sheet.write_text("sample\tpatient\tdataset\tspaceranger\timage\n" + "".join(rows))
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["heads"] = {"ridge": config["heads"]["ridge"]}
    path = write_config(
        work,
        config,
        samples=str(sheet),
        data={"source": "spaceranger"},
        tiles={"tile_px": 32, "target_mpp": 2.0},
        genes={"n_top": 40},
        report={"pcc_h_genes": 20},
    )
    t0 = time.perf_counter()
    snakemake(work, path, "--cores", "2", "--set-threads", "train=1")
    return work, time.perf_counter() - t0


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
        assert meta["st_technology"] == "Visium" and meta["pixel_size_um_estimated"] == pytest.approx(0.7299, rel=1e-3)
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
