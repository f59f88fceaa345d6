"""Training previews: images as they are; 3D occupancy seen from the front (+z), +y up, near is dark."""

import numpy as np

from nfd.viz.preview import grid_image, to_image


def test_3d_preview_orientation_and_depth():
    v = -np.ones((8, 8, 8, 1))
    v[2:4, 5:8, 6:8] = 1  # near the front (+z), high y, x in {2, 3}
    v[5:7, 0:2, 0:2] = 1  # far at the back, low y, x in {5, 6}
    img = to_image(v)[..., 0]
    assert img[0:3, 2:4].max() < img[6:8, 5:7].min()  # the near box is darker than the far one
    assert (img[0:3, 2:4] < 255).all() and (img[6:8, 5:7] < 255).all()
    assert img[4, 0] == 255 and img[0, 7] == 255  # empty rays are white


def test_3d_preview_keeps_grey_levels_on_the_middle_slice():
    v = -np.ones((8, 8, 8, 1))
    v[4, 6, 1] = 1.0  # occupied, high y, near the back (low z)
    v[4, 2, 5] = 0.0  # half-way: grey
    img = to_image(v)[..., 0]
    assert img.shape == (8, 8 + 1 + 8)
    side = img[:, 9:]  # rows = y from the top, columns = z
    assert side[7 - 6, 1] == 0 and side[7 - 2, 5] == 127 and side[0, 0] == 255


def test_2d_preview_maps_minus_one_to_black():
    s = np.full((4, 4, 1), -1.0)
    s[0, 0] = 1.0
    img = to_image(s)
    assert img.shape == (4, 4, 3) and img[0, 0, 0] == 255 and img[1, 1, 0] == 0
    assert grid_image(np.stack([s, s, s])).shape[2] == 3
