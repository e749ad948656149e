"""The exact received-ligand sum (polgen.kernels.ligands.GaussTiles) against independent references.

References are written here from the formula wL[i, l] = s * sum_j exp(-|x_i - x_j|^2 / (2 r^2)) L[j, l]:
numpy's exp on the full distance matrix, summed in extended precision where the comparison is
per element.  The tiled kernel skips far tile pairs only when a bound proves
them below 2^-54 of every output element, so every element (not only the column maximum) must
agree to rounding.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from polgen.kernels.ligands import DROP_EPS, TILE, GaussTiles, exp_nonpos, gauss_sum_exact, tile_pairs_needed
from polgen.stlr import received_ligands


def dense(tx, ty, sx, sy, L, r, s=1.0, exact_sum=False):
    d2 = (tx[:, None] - sx[None, :]) ** 2 + (ty[:, None] - sy[None, :]) ** 2
    K = np.exp(-d2 / (2.0 * r * r))
    if not exact_sum:
        return s * (K @ L)
    # the products and sums in x87 extended precision (64-bit significand), rounded once
    return (s * (K.astype(np.longdouble) @ L.astype(np.longdouble))).astype(np.float64)


def per_element(got, want):
    return float((np.abs(got - want) / np.abs(want)).max())


def assert_rounding_close(got, want, L, s):
    """Per element: 2e-15 relative, plus the exp's argument rounding.

    exp(-d^2 / (2 r^2)) is evaluated from a rounded argument z (here as d2 * (-1/(2r^2)) with a
    fused multiply-add, numpy as d2 / (2r^2)): a relative difference of a few |z| 2^-53, up to ~4e-13
    at z = -745.  An element dominated by a term at distance z has |z| <= ln(s N max L / want).
    """
    nz = want != 0
    assert (got[want == 0] == 0).all()  # exactly zero where nothing arrives
    n = L.shape[0]
    zeff = np.broadcast_to(np.log(np.maximum(s * n * np.abs(L).max(axis=0), 1e-300)), want.shape)[nz] - np.log(
        np.abs(want[nz])
    )
    tol = 2e-15 + 5.6e-16 * np.maximum(zeff, 0.0)  # |dz| <= 5 half-units of z (d2, 1/(2r^2), product)
    # results below the normal range (2.2e-308) carry only absolute precision
    err = np.abs(got[nz] - want[nz])
    lim = tol * np.abs(want[nz]) + 1e-305
    assert (err <= lim).all(), float((err / lim).max())


@numba.njit(cache=False)
def _exp_all(z):
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        out[i] = exp_nonpos(z[i])
    return out


def test_exp_matches_libm_to_4e16():
    rng = np.random.default_rng(0)
    z = -np.concatenate(
        [
            rng.uniform(0, 1, 50_000),
            rng.uniform(0, 40, 50_000),
            rng.uniform(0, 708, 50_000),
            np.linspace(0, 708, 20_001),
        ]
    )
    got, want = _exp_all(z), np.exp(z)
    assert (np.abs(got - want) / want).max() < 4e-16
    # the denormal range and below: right to a few units of the smallest denormal, then 0
    z = -np.linspace(708, 800, 5001)
    got, want = _exp_all(z), np.exp(z)
    assert np.abs(got - want).max() <= 4 * 5e-324
    assert (got[z < -746] == 0).all() and (got >= 0).all()
    assert _exp_all(np.array([0.0, -0.0]))[0] == 1.0


@pytest.fixture(scope="module")
def clustered():
    """Two dense blobs, a sparse background and a far outpost; ligands of different sparsity."""
    rng = np.random.default_rng(11)
    xy = np.concatenate(
        [
            rng.normal([800, 800], 120, (900, 2)),
            rng.normal([2600, 1200], 60, (500, 2)),
            rng.uniform(0, 3500, (700, 2)),
            rng.normal([6000, 6000], 30, (37, 2)),
        ]
    )
    n = xy.shape[0]
    L = rng.gamma(1.5, 1.0, (n, 5))
    L[rng.random((n, 5)) < 0.4] = 0.0
    L[:, 1] = np.where(xy[:, 0] > 5000, L[:, 1], 0.0)  # expressed only at the far outpost
    L[:, 2] = 0.0
    L[7, 2] = 3.0  # a single source cell
    L[:, 3] = 0.0  # nothing at all
    return xy, L


@pytest.mark.parametrize("radius", [15.0, 50.0, 200.0, 900.0])
def test_every_element_matches_correctly_rounded_dense(clustered, radius):
    xy, L = clustered
    x, y = xy[:, 0].copy(), xy[:, 1].copy()
    got = GaussTiles(x, y).apply(L, radius, 0.37)
    want = dense(x, y, x, y, L, radius, 0.37, exact_sum=True)
    assert (got[:, 3] == 0).all()
    assert_rounding_close(got, want, L, 0.37)


def test_far_tiles_are_skipped_only_when_negligible(clustered):
    rng = np.random.default_rng(2)
    u = rng.uniform(0, 4000, (8000, 2))
    t = GaussTiles(u[:, 0], u[:, 1]).targets
    _, _, S = t.pack(rng.gamma(2.0, 1.0, (8000, 2)))
    need = np.empty((t.nt, t.nt), dtype=np.bool_)
    tile_pairs_needed(t.box, t.box, S, -1.0 / (2 * 50.0**2), DROP_EPS, need)
    assert 0.02 < need.mean() < 0.25  # radius 50 on a 4000-wide tissue: most tile pairs are negligible
    assert need.diagonal().all()
    xy, L = clustered
    x, y = xy[:, 0].copy(), xy[:, 1].copy()
    g = GaussTiles(x, y)
    # the outpost ligand (column 1) reaches the blobs only through far tiles: they must be summed
    got = g.apply(L[:, [1]], 400.0)
    want = dense(x, y, x, y, L[:, [1]], 400.0, exact_sum=True)
    assert (want[:, 0] > 0).sum() > 1500
    assert_rounding_close(got, want, L[:, [1]], 1.0)


def test_negative_values_sum_every_pair(clustered):
    xy, L = clustered
    x, y = xy[:, 0].copy(), xy[:, 1].copy()
    M = L[:, :2] - 0.5  # mixed signs: no truncation is valid
    got = GaussTiles(x, y).apply(M, [300.0, 80.0], 1.0)
    want = dense(x, y, x, y, M[:, :1], 300.0), dense(x, y, x, y, M[:, 1:], 80.0)
    want = np.hstack(want)
    scale = np.abs(L[:, :2]).sum(0) + 1.0
    assert (np.abs(got - want) / scale).max() < 1e-14


@pytest.mark.parametrize("n", [1, 2, TILE - 1, TILE, TILE + 1, 3 * TILE + 5])
def test_sizes_around_the_tile(n):
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 40.0 * np.sqrt(n), (n, 2))
    xy[n // 2] = xy[0]  # duplicated position
    L = rng.gamma(2.0, 1.0, (n, 3))
    got = received_ligands(xy, L, [60.0, 60.0, 25.0], 2.0)
    want = np.hstack(
        [
            dense(xy[:, 0], xy[:, 1], xy[:, 0], xy[:, 1], L[:, :2], 60.0, 2.0 / n),
            dense(xy[:, 0], xy[:, 1], xy[:, 0], xy[:, 1], L[:, 2:], 25.0, 2.0 / n),
        ]
    )
    assert per_element(got, want) < 1e-13


def test_separate_targets_and_sources(clustered):
    xy, L = clustered
    rng = np.random.default_rng(3)
    tx, ty = rng.uniform(-200, 3700, 300), rng.uniform(-200, 3700, 300)
    out = np.empty((300, L.shape[1]))
    gauss_sum_exact(tx, ty, xy[:, 0].copy(), xy[:, 1].copy(), L, 1.0 / (2 * 120.0**2), 0.5, out)
    want = dense(tx, ty, xy[:, 0], xy[:, 1], L, 120.0, 0.5, exact_sum=True)
    assert_rounding_close(out, want, L, 0.5)


def test_uniform_tissue_matches_blas_dense():
    """The benchmark's layout (uniform density, 30% zeros), 3000 cells, two radii at once."""
    rng = np.random.default_rng(8)
    n = 3000
    xy = rng.uniform(0, 30 * np.sqrt(n), (n, 2))
    L = rng.gamma(2.0, 0.5, (n, 6)) * (rng.random((n, 6)) > 0.3)
    radii = np.array([200.0, 50.0, 200.0, 50.0, 200.0, 200.0])
    got = received_ligands(xy, L, radii, 1.0)
    want = np.empty_like(got)
    for r in (50.0, 200.0):
        c = radii == r
        want[:, c] = dense(xy[:, 0], xy[:, 1], xy[:, 0], xy[:, 1], L[:, c], r, 1.0 / n)
    assert per_element(got, want) < 1e-13
