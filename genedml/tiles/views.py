"""Dihedral views of the local crop: the flips and 90° rotations Gene-DML's reference code draws at random.

``encoder.local_views`` (1, 4 or 8) says how many views of each spot's local crop the embed stage encodes;
they are applied to the uint8 pixel crop (H, W, 3) before normalisation, in this order:

====  ===============  ==================================================================
view  name             pixels
====  ===============  ==================================================================
0     ``identity``     the crop as read
1-3   ``rot90`` ...    ``np.rot90(crop, k)``: k x 90° counter-clockwise (numpy's convention)
4     ``hflip``        ``crop[:, ::-1]``: left-right mirror
5-7   ``hflip_rot90``  ``np.rot90(crop, k)[:, ::-1]``: the mirror of view k (``hflip_rot180`` is the
                       vertical flip)
====  ===============  ==================================================================

4 views are the rotations, 8 the whole dihedral group D4. The names are stored as the feature store's
``local_view_names`` attribute.
"""

from __future__ import annotations

import numpy as np

VIEW_NAMES = ("identity", "rot90", "rot180", "rot270", "hflip", "hflip_rot90", "hflip_rot180", "hflip_rot270")
VIEW_COUNTS = (1, 4, 8)


def view_names(n_views: int) -> list[str]:
    """The names of views 0 .. n_views - 1."""
    if n_views not in VIEW_COUNTS:
        raise ValueError(f"local_views must be one of {VIEW_COUNTS}, not {n_views!r}")
    return list(VIEW_NAMES[:n_views])


def dihedral(tile: np.ndarray, view: int) -> np.ndarray:
    """View ``view`` of an (H, W, ...) crop (a numpy view of it; copy before writing)."""
    out = np.rot90(tile, int(view) % 4, axes=(0, 1))
    return out[:, ::-1] if view >= 4 else out
