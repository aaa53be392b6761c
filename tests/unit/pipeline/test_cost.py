"""genedml.pipeline.cost and `genedml plan`: encoder calls, GPU time and store sizes of a run's embed step."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import yaml

from genedml.cli import main
from genedml.errors import InputError
from genedml.io.datasets import sections
from genedml.pipeline.cost import (
    DEFAULT_TILES_PER_SECOND,
    calls_per_spot,
    grid_tiles_estimate,
    hest_samples,
    load_config,
    plan_cost,
    read_hest_table,
    store_bytes_per_spot,
)
from support.workflow import REPO

PAPER = REPO / "workflow" / "configs" / "paper"


def paper(dataset: str, tmp_path=None, **data) -> dict:
    """The paper config (complete, defaults filled), its data folder optionally moved to tmp_path."""
    files = [str(PAPER / f"{dataset}.yaml")]
    if data:
        overlay = tmp_path / "overlay.yaml"
        overlay.write_text(yaml.safe_dump({"data": data}))
        files.append(str(overlay))
    return load_config(files)


def test_calls_per_spot_is_the_neighbour_window_plus_extra_local_views():
    assert calls_per_spot({"tiles": {"grid": 5}, "encoder": {"local_views": 1}}) == 25  # centre tile = local crop
    assert calls_per_spot({"tiles": {"grid": 3}, "encoder": {"local_views": 8}}) == 9 + 7


def test_store_size_counts_views_and_token_maps():
    config = {"tiles": {"grid": 5}, "encoder": {"name": "uni", "local_views": 1, "cache_local_tokens": False}}
    assert store_bytes_per_spot(config) == 2 * 1024 * 26  # local + 25 neighbour tiles, float16
    config["encoder"].update(local_views=8, cache_local_tokens=True)
    assert store_bytes_per_spot(config) == 2 * 1024 * (26 + 8 + 8 * 197)
    assert store_bytes_per_spot({**config, "encoder": {**config["encoder"], "name": "vit_small_patch16_224"}}) is None


@pytest.mark.parametrize("dataset,n_samples,n_folds", [("her2st", 36, 8), ("stnet", 68, 8), ("cscc", 12, 4)])
def test_paper_config_cost_before_any_download(dataset, n_samples, n_folds):
    """No data folder yet: every section of the dataset, spots from the HEST-1k table genedml ships."""
    cost = plan_cost(paper(dataset), tiles_per_second=200.0)
    spots = sections(dataset)["spots_under_tissue"].astype(int)
    assert len(cost.samples) == n_samples and cost.spots == spots.sum()
    assert {s.spots_from for s in cost.samples} == {"HEST-1k table"}
    # the paper configs embed the 8 dihedral views of the local crop: 25 + 7 calls a spot
    assert cost.calls_per_spot == 32 and cost.calls == 32 * spots.sum()
    assert cost.gpu_seconds == pytest.approx(cost.calls / 200.0)
    assert cost.train_jobs == n_folds * 5
    text = cost.format()
    assert f"{cost.calls:,}" in text and "200 tiles/s" in text and "as given" in text
    # both neighbour modes side by side; grid mode shares tiles between spots, so it needs fewer calls
    modes = cost.mode_table().set_index("neighbour_mode")
    assert modes.loc["centred (configured)", "encoder_calls"] == cost.calls
    assert spots.sum() * 8 < cost.grid_calls < cost.calls  # at least the 8 views of each local crop
    assert modes["store_gb_tokens"].min() > modes["store_gb_views"].max()  # the token cache dominates
    # TRIPLEX and DKAN train a ResNet-18 on the 224 px spot images: 150,528 bytes a spot, before compression
    assert cost.pixel_heads == ["paper-triplex", "paper-dkan"] and cost.spot_px == 224
    assert f"{spots.sum() * 224 * 224 * 3 / 1e9:,.1f} GB" in text


def test_spots_come_from_the_st_file_when_it_is_readable(tmp_path):
    """A data folder with some sections: only those are costed (as the run plan keeps them), and a readable
    st file's spot count wins over the table's; an empty placeholder falls back to the table."""
    (tmp_path / "st").mkdir()
    a = ad.AnnData(np.zeros((7, 3), dtype=np.float32))
    a.write_h5ad(tmp_path / "st" / "SPA119.h5ad")
    (tmp_path / "st" / "SPA120.h5ad").touch()
    cost = plan_cost(paper("her2st", tmp_path, hest_dir=str(tmp_path)))
    by_sample = {s.sample: s for s in cost.samples}
    assert set(by_sample) == {"SPA119", "SPA120"}
    assert (by_sample["SPA119"].spots, by_sample["SPA119"].spots_from) == (7, "st file")
    table = sections("her2st").set_index("hest_id")["spots_under_tissue"].astype(int)
    assert (by_sample["SPA120"].spots, by_sample["SPA120"].spots_from) == (table["SPA120"], "HEST-1k table")
    assert cost.calls == 32 * (7 + table["SPA120"])


def test_the_demo_is_costed_from_its_spot_lattice():
    """The demo's sections do not exist before the demo runs: their whole spot lattice bounds the spots."""
    cost = plan_cost(load_config([str(REPO / "config.yaml")]))
    assert {s.spots_from for s in cost.samples} == {"demo lattice (at most)"} and cost.spots > 0
    assert 0 < cost.grid_calls < cost.calls and "store_gb_plain" in cost.mode_table()


def test_unknown_spot_counts_are_listed_not_guessed(tmp_path):
    """Samples of a sheet that no file and no table knows."""
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample\tpatient\tdataset\nX1\tP1\tmine\nX2\tP2\tmine\n")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"samples": str(sheet), "data": {"source": "hest", "hest_dir": str(tmp_path)}}))
    cost = plan_cost(load_config([str(REPO / "config.yaml"), str(overlay)]))
    assert cost.calls == 0 and all(s.spots is None for s in cost.samples)
    assert "no spot count for 2 samples" in cost.format()


def test_rate_must_be_positive():
    with pytest.raises(InputError, match="positive"):
        plan_cost(paper("cscc"), tiles_per_second=0)


def test_cli_prints_the_cost_and_writes_the_per_sample_table(tmp_path, capsys):
    out = tmp_path / "cost.tsv"
    assert main(["plan", "--configfile", str(PAPER / "cscc.yaml"), "--per-sample", str(out)]) == 0
    text = capsys.readouterr().out
    spots = int(sections("cscc")["spots_under_tissue"].astype(int).sum())
    assert f"{spots:,} spots" in text and f"{32 * spots:,}" in text
    assert f"{DEFAULT_TILES_PER_SECOND:g} tiles/s" in text and "train jobs: 20 = 4 folds x 5 heads" in text
    import pandas as pd

    table = pd.read_csv(out, sep="\t")
    assert len(table) == 12 and table["calls"].sum() == 32 * spots


def test_cli_refuses_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tiles": {"grid": 0}}))
    assert main(["plan-cost", "--configfile", str(PAPER / "cscc.yaml"), str(bad)]) == 2
    assert "tiles.grid" in capsys.readouterr().err


@pytest.mark.parametrize("hexagonal,pitch_um", [(True, 100.0), (False, 200.0)])
@pytest.mark.parametrize("n_rings", [6, 25])
@pytest.mark.parametrize("stride", [1.0, 0.5])
def test_grid_estimate_is_close_to_the_tile_stage_count(hexagonal, pitch_um, n_rings, stride):
    """The estimate from a spot count alone against the exact shared tiles the tile stage numbers for a round
    tissue of spots on a Visium (hexagonal, 100 µm) or ST (square, 200 µm) lattice."""
    from genedml.tiles.geometry import TileSpec, _used_nodes, grid_neighbourhoods, nodes_per_block

    radius = n_rings * pitch_um
    step_y = pitch_um * (np.sqrt(3) / 2 if hexagonal else 1.0)
    xy = [
        (x + (pitch_um / 2 if hexagonal and r % 2 else 0.0), r * step_y)
        for r in range(-2 * n_rings, 2 * n_rings + 1)
        for x in np.arange(-2 * radius, 2 * radius, pitch_um)
    ]
    xy = np.array([p for p in xy if np.hypot(*p) <= radius])
    mpp, tile_px = 0.5, 224  # 112 µm tiles
    spec = TileSpec.from_config({"tile_px": tile_px, "neighbour_mode": "grid", "grid_stride": stride})
    grid = grid_neighbourhoods(xy / mpp, float(tile_px), spec)
    exact = len(_used_nodes(grid, np.ones(grid["cols_rows"].shape[:2], bool), nodes_per_block(spec))["grid_nodes"])
    estimate = grid_tiles_estimate(len(xy), pitch_um, tile_px * mpp, spec.grid, hexagonal, stride)
    if stride == 1:
        assert abs(estimate - exact) / exact < 0.2, (len(xy), estimate, exact)
    else:  # finer strides: a spot uses every 1/stride-th node, so sparse spots leave nodes unused: a bound
        assert exact * 0.8 < estimate < exact * 1.6, (len(xy), estimate, exact)


def test_hest_samples_by_id_and_filter():
    table = read_hest_table()
    assert len(table) == 1229 and table["spots_under_tissue"].sum() > 2_000_000  # HEST-1k v1.1.0
    visium = hest_samples(table, ["all"], st_technology="visium", species=["Homo sapiens"])
    assert set(visium["st_technology"]) == {"Visium"} and set(visium["species"]) == {"Homo sapiens"}
    assert list(hest_samples(table, ["SPA119", "NCBI783"])["id"]) == ["SPA119", "NCBI783"]
    with pytest.raises(InputError, match="not in the HEST table: NOPE"):
        hest_samples(table, ["NOPE"])
    with pytest.raises(InputError, match="no HEST sample matches"):
        hest_samples(table, None, st_technology="Nanopore")


def test_a_hest_metadata_csv_of_a_download_is_read(tmp_path):
    """HEST-1k downloads carry the metadata as CSV (with a BOM); `plan --hest-metadata` reads it."""
    table = read_hest_table()
    csv = tmp_path / "HEST_v1_1_0.csv"
    csv.write_text(table.head(3).to_csv(index=False), encoding="utf-8-sig")
    assert list(read_hest_table(csv)["id"]) == list(table["id"].head(3))
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a HEST metadata table"):
        read_hest_table(tmp_path / "other.csv")


def test_cli_plans_hest_samples_with_a_measured_rate(tmp_path, capsys):
    """The rate is the configured mode's end-to-end embed row of a `genedml bench gpu --out` file (its shape);
    a smoke run's file is refused."""
    bench = tmp_path / "gpu.json"
    rows = [
        {"row": "forward", "tiles_per_s": 3000.0},
        {"row": "embed centred", "mode": "centred", "tiles_per_s": 2500.0},
    ]
    result = {"run": {"device": "cuda", "device_name": "NVIDIA H200", "smoke": False}, "rows": rows}
    bench.write_text(json.dumps(result))
    args = ["plan", "--configfile", str(PAPER / "her2st.yaml"), "--hest-ids", "all", "--filter"]
    args += ["st_technology=Visium", "--gpu-bench", str(bench)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "2500 tiles/s" in text and "measured end to end on NVIDIA H200" in text and "grid mode: about" in text
    bench.write_text(json.dumps({**result, "run": {**result["run"], "smoke": True}}))
    assert main(args) == 2 and "smoke run" in capsys.readouterr().err
    assert main([*args[:-2], "--gpu-bench", str(tmp_path / "none.json")]) == 2
    assert "GPU benchmark file not found" in capsys.readouterr().err
