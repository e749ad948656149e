"""MAGIC imputation (prepare(impute="magic"), polgen.stlr.prepare.magic_impute) against magic-impute 3.0.0
itself: outputs stored by tests/data/make/stlr_magic.py in tests/data/stlr/magic/magic_ref.npz, inputs
the log-normalised counts of the real MOB subset (tests/data/stlr/mob/, Stahl 2016).

Tolerances: graphtools computes the affinities in float32 (relative error ~6e-8); through the row
normalisation and t diffusion steps over values up to ~7 that is at most ~7 * (t + 1) * 6e-8 < 2e-6, so
1e-6 absolute on the outputs and 1e-7 on the diffusion operator (observed: 1.4e-8 and 2e-8).  With more
genes than n_pca, magic-impute's PCA is randomized and unseeded in the reference's call: there polgen
(exact PCA) is compared with graphtools on an exact PCA (same 1e-6) and, against the randomized outputs,
must stay within the spread of magic-impute's own outputs over 5 seeds.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from conftest import stlr_data
from polgen.errors import InputError
from polgen.stlr import prepare
from polgen.stlr.prepare import magic_impute, magic_operator


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(stlr_data("magic", "magic_ref.npz")))


def _run(ref, case):
    return magic_impute(
        ref[f"{case}_X"], knn=int(ref[f"{case}_knn"]), decay=float(ref[f"{case}_decay"]), t=int(ref[f"{case}_t"])
    )


def test_magic_without_pca_equals_magic_impute(ref):
    np.testing.assert_allclose(_run(ref, "nopca"), ref["nopca_Y"], rtol=0, atol=1e-6)
    P = magic_operator(ref["nopca_X"]).toarray()
    want = ref["nopca_P"]
    assert np.array_equal(P > 0, want > 0)  # the same kNN graph, edge for edge
    np.testing.assert_allclose(P, want, rtol=0, atol=1e-7)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)


def test_magic_other_parameters_equal_magic_impute(ref):
    # knn=8 (16 + 1 neighbours searched), decay=2, t=4
    np.testing.assert_allclose(_run(ref, "params"), ref["params_Y"], rtol=0, atol=1e-6)


def test_magic_with_pca_matches_exact_pca_graph_and_randomized_spread(ref):
    got = _run(ref, "pca")
    np.testing.assert_allclose(got, ref["pca_exact_Y"], rtol=0, atol=1e-6)
    spread = float(ref["pca_seed_spread"])
    assert 0 < np.abs(got - ref["pca_Y"]).max() <= spread
    # and the smoothing did something: far from the input
    assert np.abs(got - ref["pca_X"]).max() > 20 * spread


def test_prepare_magic_layer():
    a = ad.read_h5ad(stlr_data("mob", "mob_rep11_subset.h5ad"))
    a = a[a.obs["layer"].notna()].copy()
    b = prepare(a, impute="magic", cluster_key="layer", copy=True)
    np.testing.assert_allclose(b.layers["imputed_count"], magic_impute(b.layers["normalized_count"]), rtol=0, atol=0)
    assert b.uns["stlr_prepare"]["impute"] == "magic" and b.uns["stlr_prepare"]["k"] == 5
    c = prepare(a, impute="magic", k=8, cluster_key="layer", copy=True)
    assert not np.allclose(c.layers["imputed_count"], b.layers["imputed_count"])


def test_magic_small_data_and_bad_parameters():
    rng = np.random.default_rng(0)
    X = rng.random((6, 4))  # fewer cells than knn_max + 1: every cell is a neighbour
    P = magic_operator(X).toarray()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    assert (P > 0).all()
    for bad in ({"knn": 0}, {"knn": 2.5}, {"decay": 0.0}, {"thresh": 1.0}, {"t": -1}):
        with pytest.raises(InputError):
            magic_impute(X, **bad)
