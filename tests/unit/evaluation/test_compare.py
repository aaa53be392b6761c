"""``genedml compare`` on a small metrics tree written the way ``genedml evaluate`` writes it."""

import json

import numpy as np
import pandas as pd
import pytest

from genedml.atomic import write_tsv
from genedml.errors import InputError
from genedml.evaluation.compare import TABLES, compare, write_comparison
from genedml.evaluation.metrics import evaluate_sections

PATIENTS = {"S1": "P1", "S2": "P1", "S3": "P2", "S4": "P2", "S5": "P3", "S6": "P3", "S7": "P4", "S8": "P4"}
FOLD = {"P1": 0, "P2": 0, "P3": 1, "P4": 1}
GENES = [f"G{i}" for i in range(12)]
N_BOOT = 200


def _truth(rng):
    return {s: rng.gamma(2.0, 1.0, size=(30, len(GENES))) for s in PATIENTS}


def _write_metrics(folder, truth, prediction):
    sections = [{"sample": s, "fold": FOLD[PATIENTS[s]], "truth": truth[s], "prediction": prediction[s]} for s in truth]
    res = evaluate_sections(sections, GENES, n_top=5, heg_hvg="pooled")
    for name in ("per_section", "per_fold", "per_gene", "per_gene_section", "summary"):
        write_tsv(folder / f"{name}.tsv", res[name])  # as genedml.evaluation.evaluate.evaluate_head does


def _keys():
    k = {}

    def add(key, head, encoder, protocol="honest", seed=0, control=None):
        k[key] = {
            "head": head,
            "type": head,
            "encoder": encoder,
            "protocol": protocol,
            "seed": seed,
            "control": control,
            "label": key,
        }

    for enc in ("uni", "resnet18"):
        add(f"genedml@{enc}", "genedml", enc)
        add(f"stnet@{enc}", "stnet", enc)
        add(f"shuffled@{enc}", "shuffled", enc, control="shuffled")
        add(f"ridge@{enc}", "ridge", enc, control="ridge")
    add("genedml@uni@reference", "genedml", "uni", protocol="reference")
    add("stnet@uni@seed1", "stnet", "uni", seed=1)
    add("copy@uni", "copy", "uni")  # the same predictions as genedml@uni
    add("mean", "mean", "none", control="mean")
    return k


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    rng = np.random.default_rng(0)
    truth = _truth(rng)
    noise = {"genedml": 1.0, "stnet": 2.0, "ridge": 3.0}
    enc_gain = {"uni": 1.0, "resnet18": 1.5}
    keys = _keys()
    preds = {}
    train_mean = np.mean(np.concatenate(list(truth.values())), axis=0)
    for key, spec in keys.items():
        if spec["control"] == "mean":
            p = {s: np.tile(train_mean, (t.shape[0], 1)) for s, t in truth.items()}
        elif spec["control"] == "shuffled":
            p = {s: t[rng.permutation(t.shape[0])] for s, t in truth.items()}
        elif spec["head"] == "copy":
            p = preds["genedml@uni"]
        else:
            sd = noise[spec["head"]] * enc_gain[spec["encoder"]] * (0.7 if spec["protocol"] == "reference" else 1.0)
            p = {s: t + rng.normal(scale=sd, size=t.shape) for s, t in truth.items()}
        preds[key] = p
        _write_metrics(root / key, truth, p)
    sheet = pd.DataFrame({"sample": list(PATIENTS), "patient": list(PATIENTS.values()), "dataset": "demo"})
    return root, keys, sheet


@pytest.fixture(scope="module")
def tables(tree):
    root, keys, sheet = tree
    return compare(root, keys, sheet, n_boot=N_BOOT, level=0.95, seed=0)


def test_tables_have_their_columns_and_rows(tables, tree):
    _, keys, _ = tree
    for name, columns in TABLES.items():
        assert list(tables[name].columns) == columns, name
    iv = tables["intervals"]
    assert len(iv) == 4 * len(keys)
    assert set(iv["metric"]) == {"PCC_A", "PCC_H", "MSE", "MAE"}
    assert (iv["n_patients"].where(iv["n_sections"] > 0, 4) == 4).all() and (iv["n_boot"].isin([0, N_BOOT])).all()
    good = iv[(iv["key"] == "genedml@uni") & (iv["metric"] == "PCC_A")].iloc[0]
    assert good["ci_low"] <= good["estimate"] <= good["ci_high"]
    # the matrix: honest cells, the reference run only where no honest run exists (none here)
    mx = tables["matrix"]
    assert set(mx["block"]) == {"honest"}
    assert len(mx) == 2 * 4 + 1 + 1  # 2 encoders x (genedml, stnet, shuffled, ridge) + copy + mean
    stnet = mx[(mx["head"] == "stnet") & (mx["encoder"] == "uni")].iloc[0]
    assert stnet["n_seeds"] == 2 and stnet["seeds"] == "0,1"


def test_mean_predictor_pcc_stays_nan_with_a_note(tables):
    iv = tables["intervals"]
    row = iv[(iv["key"] == "mean") & (iv["metric"] == "PCC_A")].iloc[0]
    assert np.isnan(row["estimate"]) and np.isnan(row["ci_low"]) and "undefined" in row["note"]
    mse = iv[(iv["key"] == "mean") & (iv["metric"] == "MSE")].iloc[0]
    assert np.isfinite(mse["estimate"])
    cell = tables["matrix"][tables["matrix"]["head"] == "mean"].iloc[0]
    assert np.isnan(cell["estimate"]) and "NaN, not 0" in cell["note"]


def test_optimism_gap_is_reference_minus_honest(tables):
    gap = tables["optimism_gap"]
    assert len(gap) == 4 and set(gap["head"]) == {"genedml"} and set(gap["seeds"]) == {"0"}
    np.testing.assert_allclose(gap["gap"], gap["reference"] - gap["honest"], atol=1e-12)
    iv = tables["intervals"].set_index(["key", "metric"])["estimate"]
    for _, r in gap.iterrows():
        assert r["honest"] == pytest.approx(iv[("genedml@uni", r["metric"])])
        assert r["reference"] == pytest.approx(iv[("genedml@uni@reference", r["metric"])])
        assert r["gap_ci_low"] <= r["gap"] <= r["gap_ci_high"]
        assert r["wilcoxon_n"] == 8
    pcc = gap[gap["metric"] == "PCC_A"].iloc[0]
    assert pcc["gap"] > 0 and pcc["effect_r"] == 1.0  # less noise under reference in every section


def test_paired_tests_identical_heads_and_holm(tables):
    pt = tables["paired_tests"]
    pair = {frozenset(x) for x in zip(pt["head_a"], pt["head_b"])}
    assert frozenset({"genedml", "copy"}) in pair
    heads = pt[pt["comparison"] == "heads"]
    twin = heads[heads["head_a"].isin(["genedml", "copy"]) & heads["head_b"].isin(["genedml", "copy"])]
    assert len(twin) == 2 and set(twin["family"]) == {"genes", "sections"}
    assert twin["p_value"].isna().all() and (twin["effect_r"] == 0).all() and (twin["better"] == "").all()
    assert (twin["median_diff"] == 0).all()
    enc = pt[(pt["comparison"] == "encoders") & (pt["head_a"] == "genedml") & (pt["family"] == "sections")]
    assert len(enc) == 1 and enc.iloc[0]["better"] == "uni"  # less noise on uni in every section
    gs = pt[(pt["head_a"] == "genedml") & (pt["head_b"] == "stnet") & (pt["encoder_a"] == "uni")]
    assert set(gs["better"]) == {"genedml"} and (gs[gs["family"] == "genes"]["n"] == len(GENES)).all()
    for family in ("genes", "sections"):
        f = pt[pt["family"] == family]
        ok = f["p_value"].notna()
        assert (f.loc[ok, "p_holm"] >= f.loc[ok, "p_value"] - 1e-15).all() and (f.loc[ok, "p_holm"] <= 1).all()
    # the mean predictor's PCC is undefined, and the floors are compared with heads, not with each other
    assert not ((pt["head_b"] == "mean") | (pt["head_a"] == "mean")).any()
    controls = {"mean", "shuffled", "ridge"}
    heads = pt[pt["comparison"] == "heads"]
    assert not (heads["head_a"].isin(controls) & heads["head_b"].isin(controls)).any()


def test_seeds_and_controls(tables):
    seeds = tables["seeds"]
    assert len(seeds) == 4 and set(seeds["head"]) == {"stnet"} and (seeds["n_seeds"] == 2).all()
    assert (seeds["min"] <= seeds["mean"]).all() and (seeds["mean"] <= seeds["max"]).all()
    ctl = tables["controls"]
    assert set(ctl["head"]) == {"genedml", "stnet", "ridge", "copy"}
    row = ctl[(ctl["head"] == "genedml") & (ctl["encoder"] == "uni") & (ctl["protocol"] == "honest")].iloc[0]
    assert row["shuffled_control"] == "shuffled@uni" and row["mean_control"] == "mean"
    assert row["ridge_control"] == "ridge@uni"
    assert row["margin_PCC_A"] == pytest.approx(row["PCC_A"] - row["shuffled_PCC_A"])
    assert row["margin_ci_low"] > 0 and row["MSE_minus_mean_MSE"] < 0
    assert row["PCC_A"] > row["ridge_PCC_A"]


def test_writer_and_heat_map(tables, tmp_path):
    paths = write_comparison(tables, tmp_path / "cmp")
    for name in TABLES:
        back = pd.read_csv(paths[name], sep="\t")
        assert list(back.columns) == TABLES[name] and len(back) == len(tables[name])
    png = paths["matrix_pcc_a"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not list((tmp_path / "cmp").glob(".*tmp*"))


def test_missing_or_malformed_metrics_name_the_key(tree, tmp_path):
    import shutil

    root, keys, sheet = tree
    broken = tmp_path / "metrics"
    shutil.copytree(root, broken)
    (broken / "stnet@resnet18" / "per_gene.tsv").unlink()
    with pytest.raises(InputError, match=r"stnet@resnet18.*missing") as err:
        compare(broken, keys, sheet, n_boot=10)
    assert "per_gene.tsv" in str(err.value)
    shutil.copytree(root / "stnet@resnet18", broken / "stnet@resnet18", dirs_exist_ok=True)
    table = pd.read_csv(broken / "ridge@uni" / "per_section.tsv", sep="\t").drop(columns=["PCC_A"])
    table.to_csv(broken / "ridge@uni" / "per_section.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"ridge@uni.*PCC_A"):
        compare(broken, keys, sheet, n_boot=10)


def test_unknown_protocol_or_control_names_the_key(tree):
    root, keys, sheet = tree
    bad = {**keys, "genedml@uni": {**keys["genedml@uni"], "protocol": "cheating"}}
    with pytest.raises(ValueError, match="genedml@uni"):
        compare(root, bad, sheet, n_boot=10)
    bad = {**keys, "mean": {**keys["mean"], "control": "median"}}
    with pytest.raises(ValueError, match="'mean'"):
        compare(root, bad, sheet, n_boot=10)


def test_cli(tree, tmp_path):
    from genedml.cli import main

    root, keys, sheet = tree
    sheet_path = tmp_path / "sheet.tsv"
    sheet.to_csv(sheet_path, sep="\t", index=False)
    keys_path = tmp_path / "keys.json"
    keys_path.write_text(json.dumps(keys))
    out = tmp_path / "out"
    argv = [
        "compare",
        "--results-dir",
        str(root),
        "--keys",
        str(keys_path),
        "--sheet",
        str(sheet_path),
        "--out-dir",
        str(out),
        "--bootstrap",
        "50",
        "--level",
        "0.9",
        "--seed",
        "1",
    ]
    assert main(argv) == 0
    iv = pd.read_csv(out / "intervals.tsv", sep="\t")
    assert set(iv["level"]) == {0.9} and set(iv["n_boot"]) <= {0, 50}
    assert (out / "matrix_pcc_a.png").is_file()
    bad = dict(keys, mean={**keys["mean"], "protocol": "x"})
    assert main([*argv[:4], json.dumps(bad), *argv[5:]]) == 2
    # the run's results/ folder works as well as results/metrics/
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "metrics").symlink_to(root, target_is_directory=True)
    assert main([argv[0], "--results-dir", str(tmp_path / "results"), *argv[3:8], str(tmp_path / "o2"), *argv[9:]]) == 0
    assert (tmp_path / "o2" / "controls.tsv").is_file()
