"""A bare H&E slide as a positions-only sample: tissue mask, virtual-spot lattice, the written files and the
``genedml virtual-spots`` subcommand (on a real Aperio SVS and on synthetic pyramidal TIFFs)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from genedml.errors import InputError
from genedml.io.pixel_size import median_nn_px
from genedml.io.slide import open_slide
from genedml.tiles.lattice import LatticeSpec, lattice_nodes, technology_of_metadata, virtual_spots
from genedml.tiles.tissue import TissueMask, TissueSpec, detect_tissue, read_thumbnail, saturation_u8
from support.workflow import need_shared

SVS_MPP = 0.499  # the slide's openslide.mpp-x


@pytest.fixture(scope="module")
def svs():
    return need_shared("wsi", "cmu-1-small-region.svs")


@pytest.fixture(scope="module")
def svs_mask(svs):
    slide = open_slide(svs, "cmu")
    try:
        return detect_tissue(slide, SVS_MPP, TissueSpec.of(), "cmu", svs)
    finally:
        slide.close()


def test_svs_mask_covers_the_tissue(svs_mask):
    """Measured on this slide (CMU-1 small region, skin; thumbnail 1532 x 2048, looked at with its outline):
    tissue fraction 0.348, 0.571 mm², one piece; the mask's mean HSV saturation 0.39, the rest's 0.020
    (glass); 96% of the strongly stained pixels (saturation > 0.3) are in the mask (the others: ink and
    loose debris outside the section). The criterion: the fraction and area near the measured ones, the
    mask at least 10x more saturated than the rest, and >= 93% of the stained pixels inside it."""
    m = svs_mask
    assert m.mask.shape == (2048, 1532) and m.mask.dtype == bool
    assert m.thumbnail.shape == (2048, 1532, 3) and m.thumbnail.dtype == np.uint8
    assert m.downsample == pytest.approx((2220 / 1532, 2967 / 2048))
    assert 0.32 < m.tissue_fraction < 0.38
    assert 0.52 < m.area_mm2 < 0.62
    assert m.n_objects == 1
    from skimage.color import rgb2hsv

    sat = rgb2hsv(m.thumbnail)[..., 1]
    assert sat[m.mask].mean() > 10 * sat[~m.mask].mean()
    assert sat[~m.mask].mean() < 0.05
    stained = sat > 0.3
    assert (stained & m.mask).sum() / stained.sum() >= 0.93
    # the integer saturation the mask is made on is rgb2hsv's (to rounding)
    assert np.abs(np.round(sat * 255) - saturation_u8(m.thumbnail)).max() <= 1


@pytest.mark.parametrize(
    ("technology", "pitch", "layout", "count"), [("visium", 100.0, "hex", 64), ("st", 200.0, "square", 14)]
)
def test_svs_lattice_pitch_and_spots_on_tissue(svs_mask, technology, pitch, layout, count):
    start = time.perf_counter()
    spots = virtual_spots(svs_mask, SVS_MPP, LatticeSpec.of(), technology)
    assert time.perf_counter() - start < 1.0
    assert spots.layout == layout and spots.pitch_um == pitch and spots.technology == technology
    assert abs(len(spots) - count) <= 3  # measured: 64 (visium), 14 (st)
    assert median_nn_px(spots.spatial) * SVS_MPP == pytest.approx(pitch, rel=0.01)
    ix = (spots.spatial[:, 0] / svs_mask.downsample[0]).astype(int)
    iy = (spots.spatial[:, 1] / svs_mask.downsample[1]).astype(int)
    assert svs_mask.mask[iy, ix].all()  # every kept centre is on tissue
    assert (spots.tissue >= 0.5).all()
    r = spots.spot_um / SVS_MPP / 2  # every disc inside the slide
    assert (spots.spatial >= r - 1e-6).all() and (spots.spatial <= np.array([2220, 2967]) - r + 1e-6).all()
    assert len(set(spots.barcodes)) == len(spots)


def test_lattice_array_coordinates_and_speed():
    # hex: Space Ranger's coordinates (row + col even; row neighbours 2 columns apart), all 6 neighbours at pitch
    xy, rows, cols = lattice_nodes(2000, 2000, 100.0, 55.0, "hex")
    assert ((rows + cols) % 2 == 0).all()
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=7)
    inner = (xy > 200).all(1) & (xy < 1800).all(1)
    assert np.allclose(d[inner, 1:], 100.0)
    one = {(r, c): p for r, c, p in zip(rows, cols, xy)}
    assert np.allclose(one[(2, 4)] - one[(2, 2)], [100.0, 0.0])
    assert np.allclose(one[(3, 3)] - one[(2, 2)], [50.0, 100.0 * np.sqrt(3) / 2])
    xy, rows, cols = lattice_nodes(1000, 1000, 100.0, 50.0, "square")
    assert len(xy) == 100 and rows.max() == 9 and cols.max() == 9
    # 2 cm² of tissue at Visium pitch: ~2 x 10^4 spots, well under a second
    side_px, mpp = 141_421, 0.1
    mask = TissueMask(
        np.ones((2048, 2048), bool),
        np.zeros((1, 1, 3), np.uint8),
        (side_px / 2048,) * 2,
        0.1,
        1.0,
        200.0,
        1,
        (side_px, side_px),
    )
    start = time.perf_counter()
    spots = virtual_spots(mask, mpp, LatticeSpec.of(), "visium")
    assert time.perf_counter() - start < 1.0
    assert 2.0e4 < len(spots) < 2.6e4


def test_lattice_spec_technologies():
    spec = LatticeSpec.of()
    assert spec.technology == "auto"
    assert spec.resolve("visium") == (100.0, 55.0, "hex")
    assert spec.resolve("st") == (200.0, 100.0, "square")
    with pytest.raises(ValueError, match="auto"):
        spec.resolve()
    with pytest.raises(ValueError, match="slides.lattice.pitch_um"):
        spec.resolve("custom")
    assert LatticeSpec.of(pitch_um=150, spot_um=60, layout="square").resolve("custom") == (150.0, 60.0, "square")
    assert "--technology auto" in LatticeSpec.flags({}) and "--min-tissue 0.5" in LatticeSpec.flags({})
    assert technology_of_metadata({"st_technology": "Visium"}) == "visium"
    assert technology_of_metadata({"st_technology": "Spatial Transcriptomics"}) == "st"
    with pytest.raises(InputError, match="Xenium"):
        technology_of_metadata({"st_technology": "Xenium"}, "S1", "meta.json")


def _disc(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_synthetic_disc_hole_filled_speck_removed(tmp_path):
    """A 3 x 3 mm slide (1 µm/px): a pink tissue disc (r = 1 mm) with a small hole (r = 60 µm, 11,300 µm² <
    max_hole_um2) and a large one (r = 200 µm, 126,000 µm²), and a pink speck (r = 40 µm, 5,000 µm² <
    min_object_um2) on white glass."""
    from genedml.io.tiff import write_pyramidal_tiff

    size, mpp = 3000, 1.0
    rng = np.random.default_rng(0)
    image = np.clip(245 + rng.normal(0, 3, (size, size, 3)), 0, 255).astype(np.uint8)
    tissue = _disc((size, size), 1500, 1500, 1000) & ~_disc((size, size), 1500, 1000, 60)
    tissue &= ~_disc((size, size), 1500, 1900, 200)
    speck = _disc((size, size), 300, 300, 40)
    pink = np.clip(np.array([215, 130, 175]) + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    image[tissue | speck] = pink[tissue | speck]
    path = tmp_path / "disc.tif"
    write_pyramidal_tiff(path, image, mpp)  # levels 3000, 1500, 750
    slide = open_slide(path, "disc")
    m = detect_tissue(slide, mpp, TissueSpec.of(thumbnail_px=1024), "disc", path)
    slide.close()
    assert m.mask.shape == (1024, 1024) and m.downsample == pytest.approx((size / 1024, size / 1024))
    d = m.downsample[0]
    truth = _disc(m.mask.shape, 1500 / d, 1500 / d, 1000 / d) & ~_disc(m.mask.shape, 1500 / d, 1900 / d, 200 / d)
    iou = (m.mask & truth).sum() / (m.mask | truth).sum()
    assert iou > 0.9
    assert m.mask[int(1000 / d), int(1500 / d)]  # the small hole is filled
    assert not m.mask[int(1900 / d), int(1500 / d)]  # the large one is kept
    assert not m.mask[int(300 / d), int(300 / d)]  # the speck is removed
    assert m.n_objects == 1
    assert m.area_mm2 == pytest.approx(np.pi * (1.0**2 - 0.2**2), rel=0.05)


def test_thumbnail_of_a_single_level_slide_is_read_in_chunks(tmp_path, monkeypatch):
    """No pyramid: level 0 is read in chunks of at most CHUNK_PX², box-reduced, never whole."""
    import genedml.tiles.tissue as tissue_module
    from genedml.io.tiff import write_pyramidal_tiff

    image = np.full((1800, 1300, 3), 240, np.uint8)
    image[400:1400, 300:1000] = (200, 120, 170)
    path = tmp_path / "flat.tif"
    write_pyramidal_tiff(path, image, 0.5, min_level_size=10**6)
    slide = open_slide(path, "flat")
    assert slide.level_count == 1
    monkeypatch.setattr(tissue_module, "CHUNK_PX", 512)
    sizes = []
    read = slide.read_region

    def spy(location, level, size):
        sizes.append(size)
        return read(location, level, size)

    monkeypatch.setattr(slide, "read_region", spy)
    thumb, down = read_thumbnail(slide, 256)
    slide.close()
    assert thumb.shape == (256, 185, 3) and down == pytest.approx((1300 / 185, 1800 / 256))
    assert max(w * h for w, h in sizes) <= 512 * 512
    assert np.abs(thumb[128, 92].astype(int) - (200, 120, 170)).max() <= 3  # inside the pink box
    assert (thumb[5, 5] >= 235).all()


def test_blank_slide_is_no_tissue(tmp_path):
    from genedml.io.tiff import write_pyramidal_tiff

    rng = np.random.default_rng(1)
    image = np.clip(243 + rng.normal(0, 3, (1200, 1200, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "blank.tif"
    write_pyramidal_tiff(path, image, 0.5)
    slide = open_slide(path, "blank")
    with pytest.raises(InputError, match="no tissue") as err:
        detect_tissue(slide, 0.5, TissueSpec.of(), "blank", path)
    slide.close()
    assert err.value.sample == "blank" and err.value.path == str(path)
    assert "'blank'" in str(err.value) and str(path) in str(err.value)


def test_slide_without_pixel_size_needs_mpp(tmp_path):
    import tifffile

    from genedml.io.bare_slide import import_bare_slide

    image = np.full((600, 600, 3), 240, np.uint8)
    image[100:500, 100:500] = (200, 120, 170)
    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, image, photometric="rgb", tile=(256, 256), metadata=None)  # no resolution unit
    outs = [tmp_path / "st.h5ad", tmp_path / "meta.json", tmp_path / "qc.png"]
    with pytest.raises(InputError, match="no pixel size.*mpp") as err:
        import_bare_slide(path, "nompp", *outs, TissueSpec.of(), LatticeSpec.of(), "visium")
    assert err.value.sample == "nompp" and "slides TSV" in str(err.value)
    with pytest.raises(InputError, match="not plausible"):
        import_bare_slide(path, "nompp", *outs, TissueSpec.of(), LatticeSpec.of(), "visium", mpp=72.0)
    assert not any(p.exists() for p in outs)
    # given, it is used
    meta = import_bare_slide(path, "nompp", *outs, TissueSpec.of(thumbnail_px=256), LatticeSpec.of(), "visium", mpp=2.0)
    assert meta["pixel_size_um_estimated"] == 2.0 and "given" in meta["pixel_size_um_source"]
    assert meta["n_spots"] > 0 and all(p.exists() for p in outs)


def _check_written_sample(tmp_path, svs, st, metadata, qc, technology, pitch):
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    from genedml.io.hest import SamplePaths, load_st
    from genedml.tiles.geometry import TileSpec, tile_sample

    adata = load_st(st, "cmu", require_counts=False)
    assert adata.n_vars == 0 and adata.X.shape == (adata.n_obs, 0)
    assert (adata.obs["in_tissue"] == 1).all()
    assert {"array_row", "array_col"} <= set(adata.obs)
    meta = json.loads(metadata.read_text())
    assert meta["st_technology"] == f"virtual {technology}" and meta["inter_spot_dist"] == pitch
    assert meta["n_spots"] == adata.n_obs and meta["pixel_size_um_estimated"] == SVS_MPP
    assert meta["area_mm2"] > 0.5 and 0 < meta["tissue_fraction"] < 1 and meta["n_objects"] == 1
    # the tile stage reads it (check_pixel_size: the lattice pitch is the metadata's inter_spot_dist)
    geometry = tile_sample(
        SamplePaths("cmu", svs, st, metadata), TileSpec.of(tile_px=32, target_mpp=2.0), tmp_path / "g.npz"
    )
    assert geometry.n_spots == adata.n_obs
    assert geometry.array_coords.tolist() == adata.obs[["array_row", "array_col"]].to_numpy().tolist()
    # scanpy draws it
    plain = ad.read_h5ad(st)
    sc.pl.spatial(plain, library_id="cmu", show=False)
    plt.close("all")
    with Image.open(qc) as im:
        assert im.size[0] > 500 and max(im.size) <= 1600
        im.load()
    assert qc.stat().st_size < 2_000_000


def test_import_bare_slide_on_svs(tmp_path, svs):
    from genedml.io.bare_slide import import_bare_slide

    st, metadata, qc = tmp_path / "st" / "cmu.h5ad", tmp_path / "metadata" / "cmu.json", tmp_path / "qc.png"
    meta = import_bare_slide(svs, "cmu", st, metadata, qc, TissueSpec.of(), LatticeSpec.of(), "visium")
    assert meta["spot_diameter"] == 55.0 and "slide tags" in meta["pixel_size_um_source"]
    _check_written_sample(tmp_path, svs, st, metadata, qc, "visium", 100.0)


def test_cli_virtual_spots_on_svs(tmp_path, svs):
    from genedml import cli

    st, metadata, qc = tmp_path / "st.h5ad", tmp_path / "meta.json", tmp_path / "qc.png"
    argv = ["virtual-spots", "--sample", "cmu", "--slide", str(svs), "--technology", "st", "--min-tissue", "0.6"]
    argv += ["--thumbnail-px", "1024", "--out-st", str(st), "--out-metadata", str(metadata), "--out-qc", str(qc)]
    assert cli.main(argv) == 0
    meta = json.loads(metadata.read_text())
    assert meta["min_tissue"] == 0.6 and meta["tissue_settings"]["thumbnail_px"] == 1024
    _check_written_sample(tmp_path, svs, st, metadata, qc, "st", 200.0)
    # custom without spot_um: a clear error naming the key, nothing written
    bad = ["virtual-spots", "--sample", "cmu", "--slide", str(svs), "--technology", "custom", "--pitch-um", "150"]
    bad += [
        "--out-st",
        str(tmp_path / "x.h5ad"),
        "--out-metadata",
        str(tmp_path / "x.json"),
        "--out-qc",
        str(tmp_path / "x.png"),
    ]
    assert cli.main(bad) == 2
    assert not (tmp_path / "x.h5ad").exists()
    # technology auto (the config's default, what the rule passes): the training run's, from its metadata
    auto = ["virtual-spots", "--sample", "cmu", "--slide", str(svs), "--technology", "auto", "--thumbnail-px", "512"]
    auto += ["--out-st", str(st), "--out-metadata", str(metadata), "--out-qc", str(qc)]
    assert cli.main(auto) == 2  # no --training-metadata to resolve it from
    training = tmp_path / "training.json"
    training.write_text(json.dumps({"id": "T1", "st_technology": "Visium", "inter_spot_dist": 100.0}))
    assert cli.main([*auto, "--training-metadata", str(training)]) == 0
    assert json.loads(metadata.read_text())["st_technology"] == "virtual visium"
