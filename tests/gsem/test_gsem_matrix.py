"""vech / cov_to_cor / near_pd / reorder against R fixtures (tolerance 1e-10)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import gsem_fixture, r_reference
from polgen.errors import InputError, NotPositiveDefiniteError
from polgen.gsem.matrix import (
    cov_to_cor,
    is_pd,
    near_pd,
    reorder_indices,
    reorder_v,
    smooth_if_needed,
    subset_indices,
    vech,
    vech_reverse,
)


def _fx(name):
    return json.loads(gsem_fixture(name).read_text())


@pytest.mark.parametrize("name", ["vech_3x3.json", "vech_4x4.json"])
def test_vech_fixture(name):
    d = _fx(name)
    m = np.array(d["input"])
    np.testing.assert_allclose(vech(m), d["vech"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(vech_reverse(np.array(d["vech"])), d["reverse"], rtol=0, atol=1e-15)


def test_vech_roundtrip_random():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    a = a + a.T
    np.testing.assert_array_equal(vech_reverse(vech(a)), a)
    # column-wise lower triangle == row-wise upper triangle for symmetric matrices
    np.testing.assert_array_equal(vech(a), a[np.triu_indices(6)])
    with pytest.raises(InputError):
        vech_reverse(np.ones(5))
    with pytest.raises(InputError):
        vech(np.ones((2, 3)))


def test_cov_to_cor_fixture():
    d = _fx("cov_to_cor.json")
    np.testing.assert_allclose(cov_to_cor(np.array(d["input"])), d["expected"], rtol=0, atol=1e-12)


def test_near_pd_fixture():
    # The fixture's expected matrix has a unit diagonal: it is R's nearPD(x, corr=TRUE) (equal here
    # to keepDiag=TRUE).  R's default corr=FALSE gives a different matrix (checked below against R).
    d = _fx("near_pd.json")
    x = np.array(d["input"])
    np.testing.assert_allclose(near_pd(x, corr=True), d["expected"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(near_pd(x, keep_diag=True), d["expected"], rtol=0, atol=1e-10)
    got = near_pd(x)  # R: as.matrix(nearPD(x)$mat), printed with 16 digits
    want = np.array(
        [
            [1.1555323411023470, 0.78561684369002871, 0.78561684369002882],
            [0.7856168436900287, 1.08412078959167624, -0.01587920454603638],
            [0.7856168436900288, -0.01587920454603638, 1.08412078959167624],
        ]
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert is_pd(got) and not is_pd(x)


def test_reorder_fixture():
    d = _fx("reorder.json")
    perm = reorder_indices(d["user_order"], d["model_order"])
    np.testing.assert_array_equal(perm + 1, d["perm"])
    np.testing.assert_allclose(
        reorder_v(np.array(d["v"]), d["user_order"], d["model_order"]), d["v_reordered"], rtol=0, atol=1e-12
    )


def test_reorder_nontrivial_against_direct_construction():
    rng = np.random.default_rng(2)
    names = ["A", "B", "C", "D"]
    new = ["C", "A", "D", "B"]
    # V = cov of vech(S) from simulated S draws: reorder must equal cov of vech(S reordered)
    draws = []
    for _ in range(50):
        x = rng.normal(size=(4, 4))
        draws.append(x @ x.T)
    pos = [names.index(n) for n in new]
    v1 = np.cov(np.array([vech(s) for s in draws]).T)
    v2 = np.cov(np.array([vech(s[np.ix_(pos, pos)]) for s in draws]).T)
    np.testing.assert_allclose(reorder_v(v1, names, new), v2, atol=1e-12)
    with pytest.raises(InputError):
        reorder_indices(names, ["A", "B", "C", "E"])


def test_subset_indices_matches_genomicsem_removal():
    names = ["V1", "V2", "V3", "V4"]
    idx = subset_indices(names, ["V1", "V3", "V4"])
    # vech pairs (column-wise): 11 21 31 41 22 32 42 33 43 44 -> drop those with V2
    np.testing.assert_array_equal(idx, [0, 2, 3, 7, 8, 9])


def test_near_pd_against_r_matrix_package():
    """Matrix::nearPD(x, corr = FALSE) on R-seeded symmetric matrices (set.seed(11), k = 3, 5, 8;
    stored R output, misc/nearpd.json)."""
    seeded = json.loads(r_reference("misc", "nearpd.json").read_text())["seeded"]
    assert [c["k"] for c in seeded] == [3, 5, 8]
    for c in seeded:
        k = c["k"]
        x = np.array(c["x"]).reshape(k, k, order="F")
        want = np.array(c["nearpd"]).reshape(k, k, order="F")
        np.testing.assert_allclose(near_pd(x), want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_smoothing_and_failure():
    bad = np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.1], [0.9, -0.1, 1.0]])
    sm, diff = smooth_if_needed(bad, "S")
    assert diff > 0.1 and is_pd(sm)
    same, d0 = smooth_if_needed(np.eye(3), "S")
    assert d0 == 0.0
    with pytest.raises(NotPositiveDefiniteError, match="V"):
        smooth_if_needed(-np.eye(3), "V")
    with pytest.raises(NotPositiveDefiniteError):
        smooth_if_needed(np.array([[1.0, np.nan], [np.nan, 1.0]]), "V")
