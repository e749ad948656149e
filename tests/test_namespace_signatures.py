"""Namespace methods show their function's signature and give the function's results.

Every method of every registered namespace (``df.gsem``, ``df.lfmm``, ``df.stlr``, DataFrame and
LazyFrame alike) must have its target function's signature without the parameter the frame
fills.  Where a namespace deliberately adapts the call, the difference is listed in ``ADAPTED``
below (a new difference fails this test until it is listed here and documented in the method).
"""

from __future__ import annotations

import inspect

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import polgen  # noqa: F401  (registers the namespaces)
from polgen._namespace import NAMESPACES

# (namespace, method) -> what differs from the target's signature minus the frame parameter:
# target-side parameter names removed, namespace-side parameter names added, return annotation changed
ADAPTED: dict[tuple[str, str], dict] = {
    # one trait per frame: trait_names (a list) becomes trait_name (a str); returns that trait's frame
    ("gsem", "munge"): {"target": {"trait_names"}, "namespace": {"trait_name"}, "returns": True},
    # one trait per frame; se_logit keeps the namespace's historical default False
    ("gsem", "sumstats"): {"target": {"trait_names", "se_logit"}, "namespace": {"trait_name", "se_logit"}},
    # fit then test: the model is fitted here from K and fit_kwargs
    ("lfmm", "fit_test"): {"target": {"model"}, "namespace": {"K", "fit_kwargs"}},
    # gene= names the target of a single-gene betadata frame
    ("stlr", "perturb"): {"target": set(), "namespace": {"gene"}},
}
# frame helpers without a single target function (own typed signatures, no **kwargs)
HELPERS = {("stlr", "betabase"), ("stlr", "received_ligands")}


def _methods():
    assert set(NAMESPACES) == {"gsem", "lfmm", "stlr"}
    for ns, cls in sorted(NAMESPACES.items()):
        for name, _ in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("_"):
                yield ns, name


METHODS = list(_methods())


def _without(sig: inspect.Signature, names) -> list[inspect.Parameter]:
    return [p for p in sig.parameters.values() if p.name not in names]


@pytest.mark.parametrize("lazy", [False, True], ids=["DataFrame", "LazyFrame"])
@pytest.mark.parametrize("ns,name", METHODS, ids=[f"{a}.{b}" for a, b in METHODS])
def test_signature_is_the_targets(ns, name, lazy):
    frame = pl.DataFrame({"a": [1.0]})
    bound = getattr(getattr(frame.lazy() if lazy else frame, ns), name)
    got = inspect.signature(bound)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in got.parameters.values()) or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(bound.__polgen_target__).parameters.values()
    ), f"{ns}.{name} takes **kwargs"
    if (ns, name) in HELPERS:
        assert not hasattr(bound, "__polgen_target__")
        assert bound.__doc__ and got.return_annotation is not inspect.Signature.empty
        for p in got.parameters.values():
            assert p.annotation is not inspect.Parameter.empty, f"{ns}.{name}: {p.name} is not annotated"
        return
    target = bound.__polgen_target__
    frame_param = bound.__polgen_frame__
    want = inspect.signature(target)
    assert frame_param in want.parameters
    diff = ADAPTED.get((ns, name), {"target": set(), "namespace": set()})
    # the declared differences on the method match the ones this test allows
    assert set(bound.__polgen_extra__) | set(bound.__polgen_replace__.values()) == diff["namespace"]
    assert set(bound.__polgen_drop__) | set(bound.__polgen_replace__) == diff["target"]
    if not diff["target"] and not diff["namespace"]:
        # a pure alias: exactly the target's signature without its data parameter
        assert got == want.replace(parameters=_without(want, {frame_param})), f"{ns}.{name}"
    else:
        assert _without(got, diff["namespace"]) == _without(want, {frame_param} | diff["target"]), f"{ns}.{name}"
        if not diff.get("returns"):
            assert got.return_annotation == want.return_annotation
    # the help text is the target's
    assert target.__doc__ and inspect.cleandoc(target.__doc__) in bound.__doc__
    assert bound.__name__ == name
    for p in got.parameters.values():
        if p.annotation is not inspect.Parameter.empty:
            assert bound.__annotations__[p.name] == p.annotation


def test_every_adaptation_is_a_registered_method():
    assert set(ADAPTED) <= set(METHODS) and HELPERS <= set(METHODS)


def test_help_shows_the_parameters():
    text = pl.DataFrame({"a": [1]}).gsem.user_gwas.__doc__
    assert "snps" in text  # the alias line names the frame parameter
    sig = str(inspect.signature(pl.DataFrame({"a": [1]}).gsem.user_gwas))
    assert "covstruc" in sig and "estimation" in sig and "Q_SNP" in sig and "**" not in sig


# -- calling through the namespace is calling the function (one cheap case each) --------------------
def test_gsem_namespace_calls_the_function():
    from polgen.gsem import write_model

    loadings = pl.DataFrame({"F1": [0.7, 0.6, 0.05, 0.1], "F2": [0.05, 0.1, 0.8, 0.5]})
    names = ["A", "B", "C", "D"]
    want = write_model(loadings, names, 0.3, fix_resid=False)
    assert loadings.gsem.write_model(names, 0.3, fix_resid=False) == want
    assert loadings.lazy().gsem.write_model(names, cutoff=0.3, fix_resid=False) == want
    with pytest.raises(TypeError):
        loadings.gsem.write_model(names, 0.3, not_a_parameter=1)


def test_gsem_munge_namespace_calls_the_function(tmp_path):
    from polgen.gsem import munge

    rng = np.random.default_rng(3)
    n = 200
    snps = [f"rs{i}" for i in range(n)]
    raw = pl.DataFrame(
        {
            "SNP": snps,
            "A1": ["A"] * n,
            "A2": ["G"] * n,
            "BETA": rng.normal(0, 0.02, n),
            "SE": np.full(n, 0.01),
            "P": rng.uniform(1e-6, 1, n),
            "N": np.full(n, 10000.0),
            "INFO": np.full(n, 0.99),
            "MAF": np.full(n, 0.3),
        }
    )
    hm3 = pl.DataFrame({"SNP": snps, "A1": ["A"] * n, "A2": ["G"] * n})
    hm3.write_csv(tmp_path / "hm3.tsv", separator="\t")
    direct, _ = munge({"T": raw}, str(tmp_path / "hm3.tsv"))
    for fr in (raw, raw.lazy()):
        via = fr.gsem.munge(str(tmp_path / "hm3.tsv"), "T")
        assert_frame_equal(via.collect(), direct["T"].collect())


def test_lfmm_namespace_calls_the_function(tmp_path):
    from polgen.demo import make_lfmm_demo
    from polgen.lfmm import fit

    d = make_lfmm_demo(tmp_path, small=True)
    env = pl.read_csv(d.env, separator="\t").select("IID", "env")
    direct = fit(env, str(d.bed), 2, seed=1)
    for fr in (env, env.lazy()):
        via = fr.lfmm.fit(str(d.bed), K=2, seed=1)
        np.testing.assert_array_equal(np.asarray(via.U), np.asarray(direct.U))
        np.testing.assert_array_equal(np.asarray(via.singular_values), np.asarray(direct.singular_values))


def test_stlr_namespace_calls_the_function():
    from polgen.stlr import splash
    from polgen.stlr.synthetic import make_betabase, make_tissue

    t = make_tissue(n_cells=60, n_genes=20, seed=4)
    base = make_betabase(t, n_trained=1, seed=5, n_lr=0, n_tfl=0)
    g = base.genes[0]
    kw = dict(
        expr=t.X,
        var_names=t.var_names,
        obs_names=t.obs_names,
        clusters=t.clusters,
        cluster_labels=t.cluster_labels,
        received={},
        received_tfl={},
    )
    want = splash(base[g], **kw)
    frame = base[g].to_polars()
    for fr in (frame, frame.lazy()):
        assert_frame_equal(fr.stlr.splash(gene=g, **kw), want)
