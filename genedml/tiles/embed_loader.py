"""The data-loader side of the embed engine: worker processes read slide regions and cut tiles.

Every worker opens the slide itself (an OpenSlide handle is never shared across processes) and sets torch
to one thread: workers decode, the main process computes.
"""

from __future__ import annotations

import numpy as np

from genedml.io.slide import copy_rgb, read_box_pixels
from genedml.tiles.embed_plan import Item
from genedml.tiles.views import dihedral


class RegionTiles:
    """Map-style dataset over ``Item``s; each worker process opens its own slide handle."""

    def __init__(self, slide_path: str, scale: float, tile_px: int, items: list[Item]):
        self.slide_path = slide_path
        self.scale = scale
        self.tile_px = tile_px
        self.items = items
        self._slide = None

    def __len__(self) -> int:
        return len(self.items)

    def _open(self):
        if self._slide is None:
            import openslide

            self._slide = openslide.OpenSlide(self.slide_path)
        return self._slide

    def __getitem__(self, j: int):
        import torch

        item, px = self.items[j], self.tile_px
        tiles = np.empty((len(item.cuts), px, px, 3), np.uint8)
        slide = self._open()
        # each box is read once, into the RGBA buffer OpenSlide decodes to; tiles are copied straight out of it
        boxes = [read_box_pixels(slide, x, y, int(w), int(h), self.scale) for x, y, w, h in item.boxes]
        for k, (b, cx, cy, view) in enumerate(item.cuts):
            tile = boxes[b][cy : cy + px, cx : cx + px]
            copy_rgb(dihedral(tile, view) if view else tile, tiles[k])  # uint8, before normalising
        return torch.from_numpy(tiles), torch.from_numpy(item.dest)


def init_loader_worker(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)  # workers decode; the main process computes
    info = torch.utils.data.get_worker_info()
    info.dataset._slide = None  # never use a handle inherited from the parent


def region_loader(slide_path: str, scale: float, tile_px: int, items: list[Item], num_workers: int):
    """A ``DataLoader`` yielding (tiles (K, px, px, 3) uint8, dest (K, 4)) per item, in order."""
    import torch

    return torch.utils.data.DataLoader(
        RegionTiles(slide_path, scale, tile_px, items),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=init_loader_worker if num_workers else None,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )
