"""Transition vectors of a perturbation (issue 19) against the Python reference's own
estimate_transition_probabilities / project_probabilities (tests/data/make/stlr_cnn_reference.py;
its velocyto correlation is a stand-in written there from velocyto's definition, velocyto not
being installed in the reference venv), and against a dense numpy version of the same scheme."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from polgen.errors import InputError, SchemaError
from polgen.schema import validate
from polgen.stlr.tissue import Tissue
from polgen.stlr.transitions import transitions

DATA = Path(__file__).resolve().parents[1] / "data" / "stlr" / "cnn"


@pytest.fixture(scope="module")
def case():
    arr = np.load(DATA / "tissue.npz")
    names = json.loads((DATA / "names.json").read_text())
    t = Tissue(
        X=np.ascontiguousarray(arr["X"]),
        var_names=names["var_names"],
        obs_names=names["obs_names"],
        coords=np.ascontiguousarray(arr["xy"]),
        clusters=arr["clusters"].astype(np.int64),
        cluster_labels=names["cluster_labels"],
    )
    pert = np.load(DATA / "ref_perturb.npz")["tf"]
    frame = pl.DataFrame({"CellID": t.obs_names, **{g: pert[:, j] for j, g in enumerate(t.var_names)}})
    return t, pert, frame, np.load(DATA / "ref_transitions.npz")


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("k", [30, 200])
def test_transitions_match_reference(case, k):
    t, _, frame, ref = case
    got = transitions(t, frame, n_neighbors=k)
    V = got.select("dx", "dy").to_numpy()
    assert _rel(V, ref[f"V_{k}"]) < 1e-9
    unit = transitions(t, frame, n_neighbors=k, unit_vectors=True).select("dx", "dy").to_numpy()
    assert _rel(unit, ref[f"Vunit_{k}"]) < 1e-9
    keep = transitions(t, frame, n_neighbors=k, remove_null=False).select("dx", "dy").to_numpy()
    assert _rel(keep, ref[f"Vkeep_{k}"]) < 1e-9
    np.testing.assert_array_equal(got.select("x", "y").to_numpy(), t.coords)
    assert got["CellID"].to_list() == t.obs_names
    validate(got, "stlr_transitions")


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_transitions_match_dense_numpy_on_an_embedding(case):
    t, pert, frame, _ = case
    rng = np.random.default_rng(4)
    E = rng.normal(size=(len(t.obs_names), 2))
    k, T = 25, 0.1
    got = transitions(t, frame.reverse(), embedding=E, n_neighbors=k, temperature=T, decimals=None)
    D = pert - t.X
    d2 = ((E[:, None] - E[None]) ** 2).sum(-1)
    V = np.zeros_like(E)
    for i in range(len(E)):
        nb = [j for j in np.argsort(d2[i], kind="stable")[:k] if j != i]
        c = np.array([np.corrcoef(t.X[j] - t.X[i], D[i])[0, 1] for j in nb])
        c = np.nan_to_num(c, nan=1.0)
        w = np.exp(c / T) / np.exp(c / T).sum() - 1.0 / len(nb)
        V[i] = (w[:, None] * (E[nb] - E[i])).sum(0)
    assert _rel(got.select("dx", "dy").to_numpy(), V) < 1e-10


def test_no_change_gives_no_vectors(case):
    t, _, _, _ = case
    frame = pl.DataFrame({"CellID": t.obs_names, t.var_names[0]: t.X[:, 0]})
    V = transitions(t, frame, n_neighbors=20).select("dx", "dy").to_numpy()
    assert np.abs(V).max() < 1e-12


def test_bad_input(case):
    t, pert, frame, _ = case
    with pytest.raises(InputError, match="not in the data"):
        transitions(t, frame.with_columns(pl.lit(1.0).alias("NotAGene")))
    with pytest.raises(InputError, match="missing from perturbed"):
        transitions(t, frame.head(10))
    with pytest.raises(SchemaError, match="CellID"):
        transitions(t, frame.drop("CellID"))
    with pytest.raises(InputError, match="embedding"):
        transitions(t, frame, embedding=np.zeros((3, 2)))
    with pytest.raises(InputError, match="n_neighbors"):
        transitions(t, frame, n_neighbors=1)
    with pytest.raises(InputError, match="temperature"):
        transitions(t, frame, temperature=0.0)
    with pytest.raises(InputError, match="NaN"):
        transitions(t, frame.with_columns(pl.lit(float("nan")).alias(t.var_names[2])))


def test_the_frame_is_what_the_plot_and_the_namespace_take(case, tmp_path):
    t, _, frame, ref = case
    via_ns = frame.stlr.transitions(t, n_neighbors=30)
    assert _rel(via_ns.select("dx", "dy").to_numpy(), ref["V_30"]) < 1e-9
    pytest.importorskip("matplotlib")
    from polgen.plot import transitions as draw

    r = draw(via_ns, tmp_path / "tr.png", grid=10)
    assert Path(r.path).stat().st_size > 1000
