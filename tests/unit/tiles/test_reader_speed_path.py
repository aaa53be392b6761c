"""The embed loader's fast read path (``read_box_pixels`` + ``copy_rgb``) gives the tiles the old one gave.

The old path is kept here as the reference: ``read_region`` -> PIL ``convert("RGB")`` -> ``np.asarray`` ->
resize when needed, then numpy slicing and dihedral views. Tiles must be bit-identical in both neighbour
modes, at native resolution, at a scale that is a pyramid downsample (snapped, level 1) and at one that is
not (resampled).
"""

import numpy as np
import openslide
import pytest
import torch
from PIL import Image

from genedml.io import slide as slide_io
from genedml.io.slide import copy_rgb, read_box, read_box_pixels, read_crop, read_rgba
from genedml.io.tiff import write_pyramidal_tiff
from genedml.tiles.embed_loader import RegionTiles
from genedml.tiles.embed_plan import plan_units
from genedml.tiles.features import StoreLayout
from genedml.tiles.geometry import TileSpec, compute_geometry
from genedml.tiles.views import dihedral

SLIDE_MPP = 0.5
TILE_PX = 32


def old_read_box(slide, x0, y0, out_w, out_h, scale):
    """``read_box`` as it was before the fast path (PIL images, ``np.asarray`` copies)."""
    level = slide.get_best_level_for_downsample(scale + 1e-6)
    down = slide.level_downsamples[level]
    w0, h0 = out_w * scale, out_h * scale
    if abs(w0 / down - out_w) < 1e-6 and abs(h0 / down - out_h) < 1e-6:
        lx, ly = int(np.floor(x0 / down + 0.5)), int(np.floor(y0 / down + 0.5))
        region = slide.read_region((int(round(lx * down)), int(round(ly * down))), level, (out_w, out_h))
        return np.asarray(region.convert("RGB"))
    left, top = int(np.floor(x0)), int(np.floor(y0))
    side_w, side_h = int(np.ceil(w0 / down)) + 2, int(np.ceil(h0 / down)) + 2
    region = slide.read_region((left, top), level, (side_w, side_h)).convert("RGB")
    ox, oy = (x0 - left) / down, (y0 - top) / down
    box = (ox, oy, ox + w0 / down, oy + h0 / down)
    return np.asarray(region.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box))


def old_item_tiles(slide, scale, px, item):
    regions = [old_read_box(slide, x, y, int(w), int(h), scale) for x, y, w, h in item.boxes]
    tiles = np.empty((len(item.cuts), px, px, 3), np.uint8)
    for k, (b, cx, cy, view) in enumerate(item.cuts):
        tile = regions[b][cy : cy + px, cx : cx + px]
        tiles[k] = dihedral(tile, view) if view else tile
    return tiles


@pytest.fixture(scope="module")
def textured_slide(tmp_path_factory):
    """A pyramidal TIFF with odd level-0 sizes (level 1's downsample is not exactly 2) and fine texture, so
    that a one-pixel shift or an interpolation change shows."""
    rng = np.random.default_rng(7)
    h, w = 1101, 1203
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 3 + yy) % 256, (yy * 5) % 256, (xx ^ yy) % 256], -1).astype(np.int16)
    image = np.clip(base + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("reader") / "textured.tif"
    write_pyramidal_tiff(path, image, mpp=SLIDE_MPP, min_level_size=256)
    with openslide.OpenSlide(str(path)) as s:
        assert s.level_count >= 2 and s.level_downsamples[1] != 2.0
        down1 = s.level_downsamples[1]
    return str(path), (w, h), down1


def spots(dims, n=40, seed=3):
    """Spots anywhere on the slide, some so close to an edge that their windows leave the image."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform([5, 5], [dims[0] - 5, dims[1] - 5], (n, 2))
    return np.vstack([xy, [[6.3, 9.7], [dims[0] - 7.2, dims[1] - 4.4]]])


def scales(down1):
    return {"native": 1.0, "pyramid level 1": down1, "resampled": 1.37, "resampled from level 1": 2.9}


@pytest.mark.parametrize("mode", ["centred", "grid"])
@pytest.mark.parametrize("scale_name", ["native", "pyramid level 1", "resampled", "resampled from level 1"])
def test_tiles_equal_the_old_path(textured_slide, mode, scale_name):
    path, dims, down1 = textured_slide
    scale = scales(down1)[scale_name]
    centres = spots(dims)
    n = len(centres)
    spec = TileSpec.of(tile_px=TILE_PX, target_mpp=SLIDE_MPP * scale, grid=5, neighbour_mode=mode)
    g = compute_geometry("T", [f"s{i}" for i in range(n)], centres, np.zeros((n, 2)), dims, SLIDE_MPP, spec)
    n_nodes = len(g.grid_nodes) if mode == "grid" else 0
    layout = StoreLayout(n, 25, 48, mode, n_nodes, n_views=8)  # every dihedral view of the local crop
    _, unit_items = plan_units(g, layout)
    items = [it for its in unit_items for it in its]
    assert items and any((it.cuts[:, 3] > 0).any() for it in items)
    tiles = RegionTiles(path, g.scale, TILE_PX, items)
    with openslide.OpenSlide(path) as s:
        for j, item in enumerate(items):
            new, dest = tiles[j]
            assert new.dtype == torch.uint8 and tuple(new.shape[1:]) == (TILE_PX, TILE_PX, 3)
            np.testing.assert_array_equal(new.numpy(), old_item_tiles(s, g.scale, TILE_PX, item), err_msg=f"item {j}")
            np.testing.assert_array_equal(dest.numpy(), item.dest)


def test_local_crops_equal_read_crop_at_native_resolution(textured_slide):
    """Grid mode reads each local crop on its own: its identity view is exactly ``read_crop`` of the spot."""
    path, dims, _ = textured_slide
    centres = spots(dims, seed=5)
    n = len(centres)
    spec = TileSpec.of(tile_px=TILE_PX, target_mpp="native", grid=5, neighbour_mode="grid")
    g = compute_geometry("T", [f"s{i}" for i in range(n)], centres, np.zeros((n, 2)), dims, SLIDE_MPP, spec)
    layout = StoreLayout(n, 25, 48, "grid", len(g.grid_nodes))
    units, unit_items = plan_units(g, layout, reuse_grid_locals=False)
    tiles = RegionTiles(path, g.scale, TILE_PX, [])
    seen = 0
    with openslide.OpenSlide(path) as s:
        for unit, items in zip(units, unit_items):
            if unit.kind != "locals":
                continue
            for item in items:
                tiles.items = [item]
                new = tiles[0][0].numpy()
                for k, (_, row, _, is_local, view) in enumerate(item.dest):
                    assert is_local == 1 and view == 0
                    np.testing.assert_array_equal(new[k], read_crop(s, g.centres[unit.lo + row], TILE_PX, 1.0))
                    seen += 1
    assert seen == n


def test_read_rgba_is_read_region_inside_and_outside_the_image(textured_slide):
    path, (w, h), _ = textured_slide
    with openslide.OpenSlide(path) as s:
        for level in range(s.level_count):
            for x, y, bw, bh in [(100, 50, 300, 200), (-40, -30, 90, 70), (w - 60, h - 20, 130, 45)]:
                expected = np.asarray(s.read_region((x, y), level, (bw, bh)))
                np.testing.assert_array_equal(read_rgba(s, x, y, level, bw, bh), expected)
        # a freed buffer of the same size is likely reused: outside the image must still come back black
        inside = read_rgba(s, 200, 200, 0, 256, 256)
        assert inside[..., :3].any()
        del inside
        outside = read_rgba(s, w + 1000, h + 1000, 0, 256, 256)
        assert not outside.any()


def test_fallback_without_openslide_internals_and_for_image_slides(textured_slide, monkeypatch):
    path, _, down1 = textured_slide
    with openslide.OpenSlide(path) as s:
        expected = {sc: old_read_box(s, 333.4, 211.6, 70, 50, sc) for sc in scales(down1).values()}
        for sc, want in expected.items():
            np.testing.assert_array_equal(read_box(s, 333.4, 211.6, 70, 50, sc), want)
        monkeypatch.setattr(slide_io, "_openslide_into_buffer", lambda: None)
        for sc, want in expected.items():
            np.testing.assert_array_equal(read_box(s, 333.4, 211.6, 70, 50, sc), want)
        monkeypatch.undo()
        rgb = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    image_slide = openslide.ImageSlide(Image.fromarray(rgb))  # no OpenSlide handle: read_region is used
    np.testing.assert_array_equal(read_box(image_slide, 333.4, 211.6, 70, 50, 1.0), expected[1.0])


def test_copy_rgb_of_every_view_and_channel_count():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (96, 128, 4), dtype=np.uint8)
    for src in (rgba, np.ascontiguousarray(rgba[..., :3])):
        for view in range(8):
            cut = src[10:42, 20:52]
            out = np.empty((32, 32, 3), np.uint8)
            copy_rgb(dihedral(cut, view), out)
            np.testing.assert_array_equal(out, dihedral(rgba[10:42, 20:52, :3], view))
    pixels = read_box_pixels(openslide.ImageSlide(Image.fromarray(rgba[..., :3])), 3, 4, 50, 40, 1.0)
    np.testing.assert_array_equal(pixels[..., :3], rgba[4:44, 3:53, :3])
