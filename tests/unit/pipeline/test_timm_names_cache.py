"""The encoder-name check reads timm's architecture names from a cache after the first dry run: importing
timm (and torch) costs seconds on every `snakemake -n` otherwise."""

import subprocess
import sys
from importlib.metadata import version

from genedml.pipeline.checks import timm_architectures


def test_names_are_cached_per_timm_version_and_read_without_timm(tmp_path):
    names = timm_architectures(tmp_path)
    assert "resnet18" in names and "vit_large_patch16_224" in names
    cache = tmp_path / f"timm-{version('timm')}-architectures.txt"
    assert set(cache.read_text().split()) == names
    cache.write_text("only_this_one\n")  # the cache is what later checks read
    code = (
        "import sys; from genedml.pipeline.checks import timm_architectures as t; "
        f"print(sorted(t({str(tmp_path)!r})), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['only_this_one']", "False"]


def test_an_unwritable_folder_still_answers(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "resnet18" in timm_architectures(blocker / "sub")  # a file where the folder would be
