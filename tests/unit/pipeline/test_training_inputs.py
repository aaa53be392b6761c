"""The training-inputs index: one file the train jobs read instead of every section's paths."""

import subprocess
import sys

import pytest

from genedml.errors import InputError
from genedml.pipeline.training_inputs import read_training_inputs, write_training_inputs


def _files(root, samples):
    for s in samples:
        (root / "features").mkdir(exist_ok=True)
        (root / "targets").mkdir(exist_ok=True)
        (root / "features" / f"{s}.zarr").mkdir()
        (root / "targets" / f"{s}.h5ad").write_text("")
    return {"features": str(root / "features/{sample}.zarr"), "targets": str(root / "targets/{sample}.h5ad")}


def test_round_trip(tmp_path):
    patterns = _files(tmp_path, ["S1", "S 2"])
    write_training_inputs(["S1", "S 2"], patterns, tmp_path / "index.tsv")
    index = read_training_inputs(tmp_path / "index.tsv")
    assert index["features"] == {"S1": str(tmp_path / "features/S1.zarr"), "S 2": str(tmp_path / "features/S 2.zarr")}
    assert index["targets"]["S1"] == str(tmp_path / "targets/S1.h5ad")


def test_a_missing_file_names_itself_and_writes_nothing(tmp_path):
    patterns = _files(tmp_path, ["S1"])
    (tmp_path / "features" / "S2.zarr").mkdir()  # S2's features exist, its targets do not
    with pytest.raises(InputError, match=r"1 targets path\(s\) do not exist \(first: .*S2\.h5ad\)"):
        write_training_inputs(["S1", "S2"], patterns, tmp_path / "index.tsv")
    assert not (tmp_path / "index.tsv").exists()


def test_not_an_index(tmp_path):
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="not a training-inputs index"):
        read_training_inputs(tmp_path / "x.tsv")


def test_cli_from_the_sample_sheet(tmp_path):
    patterns = _files(tmp_path, ["S1", "S2"])
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample\tpatient\tdataset\nS1\tP1\tdemo\nS2\tP2\tdemo\n")
    out = tmp_path / "index.tsv"
    cmd = [sys.executable, "-m", "genedml", "training-inputs", "--sheet", str(sheet)]
    cmd += ["--features-pattern", patterns["features"], "--targets-pattern", patterns["targets"], "--out", str(out)]
    subprocess.run(cmd, check=True)
    assert list(read_training_inputs(out)["features"]) == ["S1", "S2"]
