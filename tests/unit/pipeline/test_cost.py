"""genedml.pipeline.cost and `genedml plan-cost`: encoder calls and GPU time of a config's embed step."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import yaml

from genedml.cli import main
from genedml.errors import InputError
from genedml.io.datasets import sections
from genedml.pipeline.cost import DEFAULT_TILES_PER_SECOND, calls_per_spot, load_config, plan_cost, store_bytes_per_spot
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
    assert store_bytes_per_spot({**config, "encoder": {**config["encoder"], "name": "resnet18"}}) is None


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
    assert f"{cost.calls:,}" in text and "200 tiles/s" in text and "assumption" in text
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


def test_unknown_spot_counts_are_listed_not_guessed():
    """The demo's sections do not exist before the demo runs, and no table knows them."""
    cost = plan_cost(load_config([str(REPO / "config.yaml")]))
    assert cost.calls == 0 and all(s.spots is None for s in cost.samples)
    assert "no spot count for 6 samples" in cost.format()


def test_rate_must_be_positive():
    with pytest.raises(InputError, match="positive"):
        plan_cost(paper("cscc"), tiles_per_second=0)


def test_cli_prints_the_cost_and_writes_the_per_sample_table(tmp_path, capsys):
    out = tmp_path / "cost.tsv"
    assert main(["plan-cost", "--configfile", str(PAPER / "cscc.yaml"), "--per-sample", str(out)]) == 0
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
