"""Tests of the dSprites geometry and renderer against independent references."""

import itertools
import json
import pathlib

import numpy as np
import pytest
from PIL import Image, ImageSequence
from scipy import spatial

from disentangle_jax.data import dsprites, ground_truth

TESTDATA = pathlib.Path(__file__).parents[1] / "testdata"


def _reference_frames():
  frames = json.loads((TESTDATA / "dsprites_reference_frames.json").read_text())
  factors = np.array([[dsprites.SHAPE_NAMES.index(f[0]), *f[1:]] for f in frames])
  with Image.open(TESTDATA / "dsprites_reference.gif") as gif:
    images = np.stack([np.array(f.convert("L")) > 127 for f in ImageSequence.Iterator(gif)])
  return factors, images


def _agreement(rendered, reference):
  """Per frame and overall: identical pixels among those on in either image."""
  union = rendered | reference
  same = union & (rendered == reference)
  per_frame = same.sum(axis=(1, 2)) / union.sum(axis=(1, 2))
  return same.sum() / union.sum(), per_frame


def _grid(*ranges):
  return np.array(list(itertools.product(*ranges)), dtype=np.int64)


def test_reference_fixture_is_what_the_readme_says():
  """The fixture holds 320 binary 64x64 frames, each with a valid factor tuple."""
  factors, images = _reference_frames()
  assert images.shape == (320, 64, 64)
  assert factors.shape == (320, 5)
  assert (factors >= 0).all() and (factors < np.array(dsprites.FACTOR_SIZES)).all()


def test_reference_renderer_matches_published_animation():
  """>= 99% of foreground pixels over all frames agree with the animation, every frame >= 95%."""
  factors, images = _reference_frames()
  rendered = dsprites.render_dsprites(factors).astype(bool)
  overall, per_frame = _agreement(rendered, images)
  assert overall >= 0.99, overall
  assert per_frame.min() >= 0.95, (per_frame.min(), factors[per_frame.argmin()])


@pytest.mark.parametrize(
  "perturb",
  ["swap_position_axes", "next_orientation", "next_scale", "mirror_rows"],
)
def test_reference_comparison_rejects_wrong_geometry(perturb):
  """Negative control: plausible geometry mistakes fall below the 99% threshold."""
  factors, images = _reference_frames()
  wrong = factors.copy()
  if perturb == "swap_position_axes":
    wrong[:, [3, 4]] = wrong[:, [4, 3]]
  elif perturb == "next_orientation":
    wrong[:, 2] = (wrong[:, 2] + 1) % 40
  elif perturb == "next_scale":
    wrong[:, 1] = np.where(wrong[:, 1] == 5, 4, wrong[:, 1] + 1)
  rendered = dsprites.render_dsprites(wrong).astype(bool)
  if perturb == "mirror_rows":
    rendered = rendered[:, ::-1, :]
  overall, _ = _agreement(rendered, images)
  assert overall < 0.99, overall


def test_factor_values_are_the_published_grid():
  """Scale 0.5..1 in steps of 0.1, orientation 2*pi*i/39 (0 and 2*pi both in), positions i/31."""
  values = dsprites.FACTOR_VALUES
  np.testing.assert_allclose(values["scale"], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0], atol=1e-12)
  assert values["orientation"].shape == (40,)
  assert values["orientation"][0] == 0.0
  np.testing.assert_allclose(values["orientation"][1], 2 * np.pi / 39, rtol=1e-12)
  np.testing.assert_allclose(values["orientation"][39], 2 * np.pi, rtol=1e-12)
  for axis in ("posX", "posY"):
    np.testing.assert_allclose(values[axis], np.arange(32) / 31, atol=1e-12)
  np.testing.assert_array_equal(values["shape"], [1, 2, 3])
  assert dsprites.FACTOR_SIZES == (3, 6, 40, 32, 32)
  assert int(np.prod(dsprites.FACTOR_SIZES)) == dsprites.NUM_IMAGES == 737_280


def test_factors_index_formula_by_hand():
  """index = shape*245760 + scale*40960 + orientation*1024 + posX*32 + posY (REFERENCE.md)."""
  factors = np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [2, 3, 17, 5, 30]])
  expected = [0, 1, 32, 2 * 245760 + 3 * 40960 + 17 * 1024 + 5 * 32 + 30]
  assert expected[3] == 631_998
  np.testing.assert_array_equal(
    ground_truth.factors_to_index(factors, dsprites.FACTOR_SIZES), expected
  )
  last = ground_truth.index_to_factors(np.array([737_279]), dsprites.FACTOR_SIZES)
  np.testing.assert_array_equal(last, [[2, 5, 39, 31, 31]])


def test_factors_index_roundtrip_over_the_whole_grid():
  """index_to_factors and factors_to_index are inverse bijections on all 737,280 indices."""
  indices = np.arange(dsprites.NUM_IMAGES)
  factors = ground_truth.index_to_factors(indices, dsprites.FACTOR_SIZES)
  weights = np.array([245760, 40960, 1024, 32, 1])
  np.testing.assert_array_equal(factors @ weights, indices)
  np.testing.assert_array_equal(
    ground_truth.factors_to_index(factors, dsprites.FACTOR_SIZES), indices
  )


def _naive_render(factors):
  """Straight from the geometry in REFERENCE.md: every pixel of the 64x64 canvas, float64."""
  out = np.zeros((len(factors), 64, 64), dtype=np.uint8)
  rows, cols = np.mgrid[0:64, 0:64]
  for i, (shape, scale, orient, posx, posy) in enumerate(factors):
    s = 0.5 + 0.1 * scale
    t = 2 * np.pi * orient / 39
    vx = cols + 0.5 - (16 + 32 * posx / 31)
    vy = rows + 0.5 - (16 + 32 * posy / 31)
    # Invert centre + s * (dx cos t + dy sin t, -dx sin t + dy cos t).
    dx = (vx * np.cos(t) - vy * np.sin(t)) / s
    dy = (vx * np.sin(t) + vy * np.cos(t)) / s
    out[i] = dsprites.shape_contains(int(shape), dx, dy)
  return out


def _ray_casting(points, vertices):
  """Even-odd rule: a point is inside when a ray to +x crosses the closed polygon an odd time."""
  x0, y0 = vertices.T
  x1, y1 = np.roll(vertices, -1, axis=0).T
  inside = np.zeros(len(points), dtype=bool)
  for start in range(0, len(points), 1000):
    px, py = points[start : start + 1000, :1], points[start : start + 1000, 1:]
    straddles = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
      crossing_x = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    crossings = (straddles & (px < crossing_x)).sum(axis=1)
    inside[start : start + 1000] = crossings % 2 == 1
  return inside


def test_geometry_windowed_renderer_equals_full_canvas_reference():
  """The windowed, grouped renderer equals a per-pixel full-canvas evaluation on 600 images."""
  rng = np.random.default_rng(0)
  factors = rng.integers(0, dsprites.FACTOR_SIZES, size=(600, 5))
  corners = _grid(range(3), [0, 5], [0, 13], [0, 31], [0, 31])  # largest shapes at the edges
  factors = np.concatenate([factors, corners])
  rendered = dsprites.render_dsprites(factors)
  reference = _naive_render(factors)
  mismatched = (rendered != reference).sum()
  assert mismatched <= 2, mismatched  # only float rounding on a boundary could differ


def test_geometry_heart_inside_test_matches_polygon():
  """The analytic heart test agrees with even-odd ray casting on the sampled outline."""
  u = np.linspace(0, 2 * np.pi, 2001)[:-1]
  x, y = dsprites.heart_boundary(u)
  vertices = np.stack([x, y], axis=1)
  rng = np.random.default_rng(1)
  points = rng.uniform([-11, -9], [11, 11], size=(20_000, 2))
  analytic = dsprites.shape_contains(2, points[:, 0], points[:, 1])
  polygon = _ray_casting(points, vertices)
  # Vertices are <= 0.07 px apart: points this close to the outline may fall either way.
  near = spatial.cKDTree(vertices).query(points)[0] < 0.06
  assert 0.2 < analytic.mean() < 0.6
  assert near.mean() < 0.02
  assert (analytic != polygon)[~near].sum() == 0


def test_geometry_square_at_orientation_zero_by_hand():
  """Square, posX=posY=0 (centre 16,16): half-side 9.6*s -> pixels 6..25 at s=1, 11..20 at 0.5."""
  images = dsprites.render_dsprites(np.array([[0, 5, 0, 0, 0], [0, 0, 0, 0, 0]]))
  big = np.zeros((64, 64), np.uint8)
  big[6:26, 6:26] = 1
  small = np.zeros((64, 64), np.uint8)
  small[11:21, 11:21] = 1
  np.testing.assert_array_equal(images[0], big)
  np.testing.assert_array_equal(images[1], small)


def test_geometry_ellipse_extent_by_hand():
  """Ellipse s=1 at (16,16): row 15 spans cols 3..28 (|dx|<=12.73), col 15 rows 9..22."""
  image = dsprites.render_dsprites(np.array([[1, 5, 0, 0, 0]]))[0]
  np.testing.assert_array_equal(np.flatnonzero(image[15]), np.arange(3, 29))
  np.testing.assert_array_equal(np.flatnonzero(image[:, 15]), np.arange(9, 23))
  assert image.sum(axis=1).max() == 26 and image.sum(axis=0).max() == 14


def test_geometry_orientation_zero_and_last_render_alike():
  """Orientations 0 and 2*pi (index 39) give identical images for every shape and scale."""
  first = dsprites.render_dsprites(_grid(range(3), range(6), [0], range(0, 32, 5), [0, 17]))
  last = dsprites.render_dsprites(_grid(range(3), range(6), [39], range(0, 32, 5), [0, 17]))
  np.testing.assert_array_equal(first, last)


def test_geometry_opposite_orientations_are_mirror_images():
  """Shapes are symmetric in x, so angle -t is the left-right mirror of t about the centre.

  At posX=0 the centre is x=16, so the mirror maps column c to 31-c; index 39-i is angle -t_i.
  """
  factors = _grid(range(3), [1, 4], range(40), [0], [0, 20])
  images = dsprites.render_dsprites(factors).reshape(3, 2, 40, 2, 64, 64)
  assert images[..., 32:].sum() == 0
  mirrored = images[..., 31::-1]
  np.testing.assert_array_equal(images[:, :, ::-1, ..., :32], mirrored)
  assert (images[:, :, 5] != images[:, :, 34]).any()  # not trivially symmetric


def test_geometry_point_symmetry_of_square_and_ellipse_only():
  """Square and ellipse are unchanged by a half turn about their centre; the heart is not."""
  factors = _grid(range(3), [2, 5], range(0, 40, 3), [0], [0])
  images = dsprites.render_dsprites(factors).reshape(3, -1, 64, 64)[..., :32, :32]
  turned = images[..., ::-1, ::-1]
  np.testing.assert_array_equal(images[:2], turned[:2])
  assert (images[2] != turned[2]).sum(axis=(1, 2)).min() > 20


def test_geometry_pixel_count_grows_with_scale():
  """For every shape, orientation and position tested, on-pixels strictly increase with scale."""
  factors = _grid(range(3), range(6), range(0, 40, 4), [0, 15, 31], [3, 28])
  counts = dsprites.render_dsprites(factors).sum(axis=(1, 2)).reshape(3, 6, -1)
  assert (np.diff(counts, axis=1) > 0).all()
  # Area roughly scales with s^2: (1/0.5)^2 = 4.
  ratio = counts[:, 5] / counts[:, 0]
  assert ((ratio > 3.3) & (ratio < 4.8)).all(), ratio


@pytest.mark.parametrize("moving", ["posX", "posY"])
def test_geometry_centre_moves_right_with_posx_and_down_with_posy(moving):
  """The centroid moves ~32/31 px per step: right (columns) with posX, down (rows) with posY."""
  sweep = (range(32), [9]) if moving == "posX" else ([9], range(32))
  images = dsprites.render_dsprites(_grid(range(3), [3], [7], *sweep)).astype(float)
  coordinate = np.arange(64) + 0.5
  mass = images.sum(axis=(1, 2))
  column = (images.sum(axis=1) * coordinate).sum(-1) / mass
  row = (images.sum(axis=2) * coordinate).sum(-1) / mass
  along, across = (column, row) if moving == "posX" else (row, column)
  along, across = along.reshape(3, 32), across.reshape(3, 32)
  steps = np.diff(along, axis=1)
  assert ((steps > 0.5) & (steps < 1.6)).all(), steps
  np.testing.assert_allclose(along[:, -1] - along[:, 0], 32, atol=0.6)
  np.testing.assert_allclose(across - across[:, :1], 0, atol=0.6)


def test_geometry_shapes_stay_inside_the_canvas():
  """Even the largest shapes at the extreme positions keep a blank border of >= 2 pixels."""
  factors = _grid(range(3), [5], range(40), [0, 31], [0, 31])
  images = dsprites.render_dsprites(factors)
  border = images.copy()
  border[:, 2:-2, 2:-2] = 0
  assert border.sum() == 0


def test_geometry_rejects_bad_factors():
  """Out-of-range or misshapen factors raise ValueError naming the factor and valid range."""
  with pytest.raises(ValueError, match=r"'orientation' = 40 .* 0\.\.39"):
    dsprites.render_dsprites(np.array([[0, 0, 40, 0, 0]]))
  with pytest.raises(ValueError, match=r"shape \[B, 5\]"):
    dsprites.render_dsprites(np.zeros((2, 4), np.int64))


def test_dataset_render_source_observations():
  """source='render' gives float32 [B, 64, 64, 1] in {0, 1}, equal to render_dsprites."""
  data = dsprites.DSprites(source="render")
  factors, observations = data.sample(16, np.random.default_rng(3))
  assert observations.shape == (16, 64, 64, 1) and observations.dtype == np.float32
  assert set(np.unique(observations)) <= {0.0, 1.0}
  np.testing.assert_array_equal(observations[..., 0], dsprites.render_dsprites(factors))


def test_dataset_unknown_source():
  """An unknown source is a ValueError naming the valid ones."""
  with pytest.raises(ValueError, match="'cache' or 'render'"):
    dsprites.DSprites(source="disk")
