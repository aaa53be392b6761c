"""``genedml bench gpu --device cpu --smoke``: the GPU benchmark's whole code path, shrunk, on the CPU.

Checks the table's rows and columns and that every measured value is positive; never a speed.
"""

import json

import pytest

from genedml.bench_gpu import peak_tflops, vit_flops_per_tile
from genedml.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

EMBED_COLUMNS = ("tiles", "wall_s", "tiles_per_s", "ratio", "tflops", "peak_mem_mb")
HEAD_COLUMNS = ("spots", "epochs", "s_per_epoch", "first_epoch_s", "peak_mem_mb", "params")


def test_smoke_run_writes_every_row_and_column(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    argv = ["bench", "gpu", "--device", "cpu", "--smoke", "--slide-um", "500", "500"]
    assert main([*argv, "--work-dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert list(rows) == ["forward", "embed centred", "embed grid", "gene-dml 64 spots", "gene-dml 128 spots"]
    assert result["run"]["device_name"] == "cpu" and result["run"]["peak_tflops"] is None
    for name in ("forward", "embed centred", "embed grid"):
        for column in EMBED_COLUMNS:
            assert rows[name][column] > 0, (name, column)
        assert rows[name]["peak_fraction"] is None  # no peak is known for a CPU: nothing is made up
    assert rows["embed centred"]["spots"] == rows["embed grid"]["spots"] > 0
    assert rows["embed centred"]["tiles"] > rows["embed grid"]["tiles"]  # centred encodes every window
    for name in ("gene-dml 64 spots", "gene-dml 128 spots"):
        for column in HEAD_COLUMNS:
            assert rows[name][column] > 0, (name, column)
    assert result["embed"]["gflop_per_tile"] > 0
    table = capsys.readouterr().out
    for header in ("tiles/s", "e2e/fwd", "TFLOP/s", "of peak", "s/epoch", "peak MB", "embed grid"):
        assert header in table


def test_uni_flops_per_tile_and_peaks():
    """ViT-L/16 at 224 px, UNI's kwargs: 2 x 61.6 GMAC per tile (the 24 blocks, not random-init speed)."""
    from genedml.tiles.encoders import build_encoder

    encoder = build_encoder({"name": "uni", "allow_random_init": True, "model_kwargs": {"depth": 1}})
    one_block = vit_flops_per_tile(encoder.model, 224)
    patch_embed = 2 * 196 * 768 * 1024
    assert (one_block - patch_embed) * 24 + patch_embed == pytest.approx(2 * 61.6e9, rel=0.01)
    assert peak_tflops("NVIDIA H100 80GB HBM3") == peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and peak_tflops("NVIDIA L40S") == 362.0
    assert peak_tflops("NVIDIA H100 PCIe") is None and peak_tflops("Tesla T4") is None
    assert peak_tflops("Tesla T4", given=65.0) == 65.0
