"""The H&E under a spatial map: only the cropped part of the thumbnail, shrunk, placed where the spots are."""

from __future__ import annotations

import numpy as np
import pytest

from genedml.evaluation.figures import backdrop


def test_backdrop_is_the_crop_at_level_0_coordinates():
    # a thumbnail at half the slide's size, with a bright square at level-0 px x 400-600, y 200-300
    width = 2000
    image = np.zeros((600, 1000, 3), np.uint8)
    image[100:150, 200:300] = 255
    under, extent = backdrop(image, (350.0, 650.5, 150.0, 351.0), width, max_px=10_000)
    x0, x1, y1, y0 = extent
    # whole thumbnail pixels around the box, in level-0 units (2 level-0 px per thumbnail px)
    assert (x0, y0) == (350.0, 150.0) and x1 == pytest.approx(652.0) and y1 == pytest.approx(352.0)
    assert under.shape == (101, 151, 3)
    # the square sits where it is on the slide
    rows, cols = np.nonzero(under[..., 0] > 128)
    assert x0 + 2 * cols.min() == 400 and x0 + 2 * (cols.max() + 1) == 600
    assert y0 + 2 * rows.min() == 200 and y0 + 2 * (rows.max() + 1) == 300


def test_backdrop_shrinks_to_the_panel_and_keeps_the_extent():
    image = np.full((1400, 1800, 3), 200, np.uint8)
    under, extent = backdrop(image, (0.0, 1800.0, 0.0, 1400.0), 1800, max_px=648)
    assert max(under.shape[:2]) == 648 and under.shape[1] / under.shape[0] == pytest.approx(1800 / 1400, rel=1e-2)
    assert extent == (0.0, 1800.0, 1400.0, 0.0)
