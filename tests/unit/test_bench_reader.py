"""``genedml bench reader`` on a tiny generated slide: both neighbour modes, positive rates, never a speed."""

import json

import pytest

from genedml.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

RATE_COLUMNS = ("raw_wall_tiles_per_s", "reader_wall_tiles_per_s", "raw_cpu_tiles_per_s", "reader_cpu_tiles_per_s")


def test_reader_bench_measures_both_modes(tmp_path, capsys):
    out = tmp_path / "reader.json"
    argv = ["bench", "reader", "--visium-demo", "--demo-size-um", "700", "600", "--max-tiles", "40"]
    argv += ["--visium-tiles", json.dumps({"tile_px": 32, "target_mpp": 0.5}), "--repeats", "2"]
    assert main([*argv, "--work-dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["mode"]: r for r in result["rows"]}
    assert sorted(rows) == ["centred", "grid"]
    for mode, row in rows.items():
        assert row["dataset"] == "visium_demo" and 40 <= row["tiles"] and row["boxes"] > 0, mode
        for column in (*RATE_COLUMNS, "ratio_wall", "ratio_cpu"):
            assert row[column] > 0, (mode, column)
    assert rows["centred"]["box_px_per_tile_px"] >= 1.0  # a window holds its tiles (fewer at the edge)
    table = capsys.readouterr().out
    for header in ("raw t/s", "read t/s", "ratio", "centred", "grid"):
        assert header in table
