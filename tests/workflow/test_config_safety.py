"""Bad configs fail when the run starts, config values never reach a shell as code, and the workflow asks
only for what it can make: real Snakemake runs (issue 19's cases)."""

from __future__ import annotations

import os
import subprocess

import anndata as ad
import pytest
import yaml

from support.workflow import BIN, PIPELINE_SAMPLES, REPO, planned_jobs, snakemake, tiny_config

INJECT = "$(touch INJECTED)"  # a command substitution: it must stay text wherever it is written


def dry_run(workdir, config_path, **env):
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(config_path), "-n"]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})


def edit(config_path, change):
    config = yaml.safe_load(config_path.read_text())
    change(config)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def set_key(path: str, value):
    def change(config):
        node = config
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def bad_patient(config):
    sheet = config["samples"]
    text = open(sheet).read().replace("\tPA\t", f"\t{INJECT}\t", 1)
    open(sheet, "w").write(text)


# (what is wrong, the change, words of the error the user sees)
CASES = [
    ("top-level typo", set_key("run_head", ["ridge"]), "unknown key 'run_head' (did you mean 'run_heads'?)"),
    ("even neighbour grid", set_key("tiles.grid", 4), "config tiles.grid: 4 is not allowed"),
    ("unknown head key", set_key("heads.ridge.alpha", 5), "unknown setting(s) ['alpha']"),
    ("epochs -1", set_key("heads.stnet", {"type": "stnet", "epochs": -1}), "stnet epochs must be >= 1, not -1"),
    ("epochs 0", set_key("heads.stnet", {"type": "stnet", "epochs": 0}), "stnet epochs must be >= 1, not 0"),
    ("epochs as text", set_key("heads.stnet", {"type": "stnet", "epochs": "ten"}), "must be an integer"),
    ("unknown head type", set_key("heads.mine", {"type": "transformer"}), "unknown head type 'transformer'"),
    ("missing weights", set_key("encoder.weights", "/no/such/uni.bin"), "config encoder.weights: the encoder weights"),
    ("unknown encoder", set_key("encoder.name", "resnet181"), "neither one of genedml's encoders"),
    ("device as a command", set_key("encoder.device", INJECT), "config encoder.device"),
    ("patient as a command", bad_patient, "sample sheet column 'patient'"),
    ("too many validation patients", set_key("folds.val_patients", 3), "folds.val_patients is 3"),
    ("missing gene list", set_key("genes.list", "/no/such/genes.txt"), "config genes.list: the gene list file"),
]


@pytest.mark.parametrize("what, change, message", CASES, ids=[c[0] for c in CASES])
def test_a_bad_config_fails_when_the_run_starts(tmp_path, what, change, message):
    config_path = tiny_config(tmp_path, PIPELINE_SAMPLES)
    edit(config_path, change)
    proc = dry_run(tmp_path, config_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{what}: the dry run passed\n{text[-2000:]}"
    assert message in text, f"{what}: expected {message!r} in\n{text[-3000:]}"
    assert not (tmp_path / "INJECTED").exists() and not (tmp_path / "results").exists()


def write_hest_folder(folder, samples):
    """Real demo sections in the HEST-1k layout under ``folder`` (a path with a space and a `$(...)`)."""
    for sample, patient in samples:
        subprocess.run(
            [str(BIN / "genedml"), "demo-data", "--sample", sample, "--patient", patient, "--out-dir", str(folder)]
            + ["--width-um", "900", "--height-um", "700", "--n-genes", "60"],
            check=True,
            capture_output=True,
        )


def test_odd_paths_and_values_stay_text_and_the_run_asks_only_for_what_it_makes(tmp_path):
    """One real run where every path has a space and a command substitution in it, snakemake is started
    without activating the environment, and a fold table leaves two sections only ever trained on; then the
    gene list edited in place, a deleted store and a new weights file are each seen by the next plan."""
    samples = [("S1", "PA"), ("S2", "PA"), ("S3", "PB"), ("S4", "PB")]
    odd = tmp_path / f"my data {INJECT}"
    write_hest_folder(odd / "hest", samples)
    genes = [str(g) for g in ad.read_h5ad(odd / "hest" / "st" / "S1.h5ad").var_names[:25]]
    gene_list = odd / "genes list.txt"
    gene_list.write_text("\n".join(genes) + "\n")
    fold_table = odd / "folds table.tsv"  # S2 and S4 are trained on, never held out
    fold_table.write_text("fold\ttest_samples\ttrain_samples\n0\tS1\tS3,S4\n1\tS3\tS1,S2\n")

    workdir = tmp_path / "run dir"
    workdir.mkdir()
    config_path = tiny_config(workdir, samples)
    sheet = odd / "samples sheet.tsv"
    sheet.write_text((workdir / "samples.tsv").read_text())

    def change(config):
        config["samples"] = str(sheet)
        config["data"] = {"source": "hest", "hest_dir": str(odd / "hest")}
        config["genes"] = {"list": str(gene_list)}
        config["folds"] = {"scheme": "table", "table": str(fold_table)}
        config["report"]["spatial_genes"] = [INJECT, genes[0]]

    edit(config_path, change)
    # no environment activated: only the system's tools on PATH, snakemake called by its path
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path))}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(config_path), "--cores", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-6000:]
    assert "no fold holds out S2, S4" in text

    # nothing ran as a command, nothing was written beside the user's files
    for place in (tmp_path, workdir, odd, workdir / "results"):
        assert not (place / "INJECTED").exists(), place
    assert sorted(p.name for p in odd.iterdir()) == ["folds table.tsv", "genes list.txt", "hest", "samples sheet.tsv"]
    # predictions, metrics and maps only for the held-out sections
    results = workdir / "results"
    exports = sorted(p.name for p in (results / "predictions" / "ridge").glob("*.h5ad"))  # beside Snakemake's marker
    assert exports == ["S1.h5ad", "S3.h5ad"]
    assert (results / "report.md").exists()
    chosen = (results / "genes" / "genes.tsv").read_text().split()
    assert genes[-1] in chosen

    # the gene list is an input: editing it in place chooses the genes again
    gene_list.write_text("\n".join(genes[:-1]) + "\n")
    assert "select_genes" in planned_jobs(dry_run(workdir, config_path))
    gene_list.write_text("\n".join(genes) + "\n")
    os.utime(gene_list, (1, 1))  # back as it was, older than the outputs
    # a deleted feature store is embedded again
    store = results / "features" / "resnet18" / "S2.zarr"
    subprocess.run(["rm", "-r", str(store)], check=True)
    assert planned_jobs(dry_run(workdir, config_path)).get("embed") == 1


def test_a_new_weights_file_at_another_path_reembeds(tmp_path):
    """Pointing encoder.weights at another file changes the embed step's slice: every sample re-embeds."""
    config_path = tiny_config(tmp_path, PIPELINE_SAMPLES[:4])
    snakemake(tmp_path, config_path, "--cores", "2", "--until", "embed")
    weights = tmp_path / "weights dir" / "resnet18.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"not really weights")
    os.utime(weights, (1, 1))  # older than the stores: only the changed setting can trigger the re-embed
    edit(config_path, set_key("encoder.weights", str(weights)))
    assert planned_jobs(dry_run(tmp_path, config_path)).get("embed") == 4
