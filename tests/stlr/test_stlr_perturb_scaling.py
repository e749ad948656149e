"""Perturbation cost follows the trained genes, not the data set's width (issue 14).

The Perturber's working arrays hold only the trained genes and their modulators; every other gene
keeps its expression (clipped at 0 once a step ran).  Checked bit for bit against the same
Perturber made to work on every gene (``as_tissue`` without ``genes=``, the behaviour before),
on a wide sparse tissue with negative values, -0.0 and a target outside the working set.
"""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp

from polgen.errors import InputError
from polgen.stlr.perturb import Perturber
from polgen.stlr.synthetic import make_betabase, make_tissue
from polgen.stlr.tissue import as_tissue

pmod = importlib.import_module("polgen.stlr.perturb")  # the package's perturb is the function


@pytest.fixture(scope="module")
def wide():
    t = make_tissue(
        n_cells=150, n_genes=2000, n_clusters=3, seed=5, n_tfs=30, n_ligands=20, n_receptors=20, sparsity=0.8
    )
    base = make_betabase(t, n_trained=8, seed=2)
    a = t.to_anndata()
    X = a.layers["imputed_count"].copy()
    X[3, -1] = -0.5  # a negative value outside the working set: clipped to 0 by every step
    X[7, -2] = -0.0
    X[:, -3] = 0.0
    X[:, -3][::4] = 1.25
    a.layers["imputed_count"] = sp.csr_matrix(X)
    a.X = sp.csr_matrix(X)
    return t, base, a, X


def full_model(monkeypatch, *args, **kw) -> Perturber:
    """The Perturber working on every gene (its behaviour before the working set)."""
    with monkeypatch.context() as m:
        m.setattr(pmod, "as_tissue", lambda obj, genes=None, **k: as_tissue(obj, **k))
        return Perturber(*args, **kw)


def frames_equal(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.columns == b.columns
    x, y = a.drop("CellID").to_numpy(), b.drop("CellID").to_numpy()
    assert x.shape == y.shape
    np.testing.assert_array_equal(x, y)
    assert np.array_equal(np.signbit(x), np.signbit(y))  # -0.0 where the old path had it


def test_working_set_is_small_and_results_identical(wide, monkeypatch):
    t, base, a, X = wide
    m = Perturber(a, base, lr=t.lr)
    ref = full_model(monkeypatch, a, base, lr=t.lr)
    work = set(base.genes).union(*(set(base[g].modulators) for g in base.genes))
    assert m.X0.shape == (150, len(work)) and len(work) < 120
    assert ref.X0.shape == (150, 2000)
    outside = t.var_names[-3]  # not a modulator: only its own expression changes
    assert outside not in work
    cases = [
        (t.ligands[0], 0.0, dict(n_propagation=3)),
        ([t.tfs[0], outside], [0.0, 2.0], dict(n_propagation=2, cells=np.arange(0, 150, 3))),
        (t.receptors[0], 0.0, dict(n_propagation=0)),
        (t.ligands[0], 3.0, dict(n_propagation=2, clip=False)),
    ]
    for target, expr, kw in cases:
        with pytest.warns(UserWarning) if warns(m, target) else _nothing():
            got, got_d = m.run(target, expr, return_delta=True, **kw)
        with pytest.warns(UserWarning) if warns(m, target) else _nothing():
            want, want_d = ref.run(target, expr, return_delta=True, **kw)
        frames_equal(got, want)
        frames_equal(got_d, want_d)
        np.testing.assert_array_equal(m.last_simulated, ref.last_simulated)
        with pytest.warns(UserWarning) if warns(m, target) else _nothing():
            got_c = m.run(target, expr, changed_only=True, **kw)
        with pytest.warns(UserWarning) if warns(m, target) else _nothing():
            want_c = ref.run(target, expr, changed_only=True, **kw)
        frames_equal(got_c, want_c)
        if kw["n_propagation"]:  # the negative outside value was clipped, as before
            assert t.var_names[-1] in got_c.columns
        assert len(got_c.columns) < 200


def warns(m: Perturber, target) -> bool:
    """The perturbation of ``target`` warns that it does not propagate (a gene no model uses)."""
    targets = [target] if isinstance(target, str) else target
    return any(g not in m.used and g not in m.ligands for g in targets)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_write_to_and_unknown_gene(wide, monkeypatch):
    t, base, a, X = wide
    b = a.copy()
    pmod.perturb(a, base, t.ligands[0], 0.0, lr=t.lr, n_propagation=2, write_to=b)
    ref = full_model(monkeypatch, a, base, lr=t.lr)
    want = ref.run(t.ligands[0], 0.0, n_propagation=2).drop("CellID").to_numpy()
    np.testing.assert_array_equal(b.layers[f"{t.ligands[0]}_perturbed"], want)
    np.testing.assert_array_equal(b.layers[f"{t.ligands[0]}_delta"], want - X)
    m = Perturber(a, base, lr=t.lr)
    with pytest.raises(InputError, match="did you mean"):
        m.run(t.var_names[-5].lower(), 0.0)


def test_h5ad_path_and_dense_source(wide, tmp_path, monkeypatch):
    t, base, a, X = wide
    p = tmp_path / "wide.h5ad"
    a.write_h5ad(p)
    d = a.copy()
    d.layers["imputed_count"] = np.asarray(X)
    want = full_model(monkeypatch, a, base, lr=t.lr).run(t.tfs[0], 0.0, n_propagation=2, changed_only=True)
    for src in (str(p), d):
        frames_equal(Perturber(src, base, lr=t.lr).run(t.tfs[0], 0.0, n_propagation=2, changed_only=True), want)
    assert isinstance(pd.Index(a.var_names), pd.Index)
