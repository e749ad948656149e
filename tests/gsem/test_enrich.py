"""polgen.gsem.enrich against R GenomicSEM's enrich (tests/data/gsem/r/sldsc_enrich, on R's own
s_ldsc outputs run through polgen's s_ldsc) and the ../shared fixture enrich_synth.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from polgen.errors import InputError, ModelError
from polgen.gsem.enrichment import NOT_ANALYSED_FLANK, enrich
from polgen.gsem.stratified import StratifiedCovStruc, s_ldsc

D = Path(__file__).resolve().parents[1] / "data" / "gsem" / "r" / "sldsc_enrich"
FX = Path(__file__).resolve().parents[1] / "data" / "gsem" / "fixtures" / "newer" / "enrich_synth.json"
R = json.loads((D / "r_out.json").read_text())
SLDSC = {
    "cont": dict(n_blocks=20, exclude_cont=True, ld="annot/baseline."),
    "all": dict(
        n_blocks=30,
        exclude_cont=False,
        sample_prev=[0.5, None, None],
        population_prev=[0.1, None, None],
        ld="annot/baseline.",
    ),
    "extra": dict(n_blocks=25, exclude_cont=True, ld=["annot/baseline.", "extra/extra."]),
}
# case: (s_ldsc case, model, params, fix, std_lv, rm_flank, tau, rel. tolerance of the enrichment)
# stdlv (free loadings, fixed variances): R's estimates are within 2e-7 of the optimum (a dense
# minimisation of the same DWLS objective agrees); polgen's fit is restarted from its own solution
# until the objective stops falling (one run stopped 3.2e-6 short) and agrees to 2e-7.
CASES = {
    "var": ("cont", "F1 =~ T1 + T2 + T3\nF1 ~~ F1", ["F1~~F1"], "regressions", False, True, False, 1e-6),
    "stdlv": ("cont", "F1 =~ T1 + T2 + T3", ["F1=~T1", "F1 =~ T2"], "variances", True, True, False, 1e-6),
    "tau": ("all", "F1 =~ T1 + T2 + T3", ["F1~~F1"], "regressions", False, False, True, 1e-6),
    "rg": ("extra", "T1 ~~ T2", ["T1~~T2"], "regressions", False, True, False, 1e-6),
    "cov": ("cont", "T1 ~~ T2 + T3\nT2 ~~ T3", ["T1~~T1", "T2~~T3"], "covariances", False, True, False, 1e-6),
}


@pytest.fixture(scope="module")
def fits() -> dict[str, StratifiedCovStruc]:
    cwd = os.getcwd()
    os.chdir(D)  # R names the extra annotation set by its prefix as given
    try:
        return {
            c: s_ldsc(
                [f"T{i}.sumstats.gz" for i in (1, 2, 3)],
                wld="weights/weights.",
                frq="frq/1000G.",
                trait_names=["T1", "T2", "T3"],
                **kw,  # type: ignore[arg-type]
            )
            for c, kw in SLDSC.items()
        }
    finally:
        os.chdir(cwd)


def _num(v):
    return np.array([np.nan if x is None else x for x in v], dtype=float)


@pytest.mark.parametrize("case", list(CASES))
def test_enrich_matches_r(fits, case):
    sl, model, params, fix, std_lv, rm_flank, tau, tol = CASES[case]
    res = enrich(fits[sl], model, params, fix=fix, std_lv=std_lv, rm_flank=rm_flank, tau=tau)  # type: ignore[arg-type]
    ref = R["enrich"][case]
    tables = res.tables()
    assert len(tables) == len(params) + 1
    for j, t in enumerate(tables[:-1]):
        assert t["Annotation"].to_list() == ref[f"ann.{j + 1}"]
        assert (t["lhs"] + t["op"] + t["rhs"]).to_list() == ref[f"par.{j + 1}"]
        for col, key, rtol in (
            ("Enrichment", "enr", tol),
            ("Enrichment_SE", "enr_se", tol),
            ("Enrichment_p_value", "enr_p", 100 * tol),
            ("Cov_Smooth", "cov_smooth", 0),
        ):
            got = t[col].cast(float).fill_null(np.nan).to_numpy()
            want = _num(ref[f"{key}.{j + 1}"])
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            ok = ~np.isnan(want)
            np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=1e-300 if rtol else 1e-15)
    base = tables[-1]
    got = {f"{a}{b}{c}": (e, s, f) for a, b, c, e, s, f in base.iter_rows()}
    assert sorted(got) == sorted(ref["base_par"])
    for key, e, s, f in zip(ref["base_par"], ref["base_est"], ref["base_se"], ref["base_fixed"]):
        assert got[key][0] == pytest.approx(e, rel=1e-6)
        if s is None:
            assert np.isnan(got[key][1])
        else:
            assert got[key][1] == pytest.approx(s, rel=1e-6)
        assert got[key][2] == f


def test_flanking_rows_kept_when_asked(fits):
    res = enrich(fits["all"], "F1 =~ T1 + T2 + T3", "F1~~F1", rm_flank=False)
    flag = dict(zip(res.enrichment["Annotation"], res.enrichment["Warning"]))
    assert flag["Aflanking.500L2"] == NOT_ANALYSED_FLANK and flag["CL2"] == NOT_ANALYSED_FLANK
    res2 = enrich(fits["all"], "F1 =~ T1 + T2 + T3", "F1~~F1", rm_flank=True, base=False)
    assert res2.enrichment["Annotation"].to_list() == ["baseL2", "AL2", "BL2"]
    assert res2.base is None


def test_enrich_synth_fixture():
    fx = json.loads(FX.read_text())
    mats = [np.asarray(s) for s in fx["s"]]
    vs = [np.asarray(v) for v in fx["v"]]
    sc = StratifiedCovStruc(
        S=mats,
        V=vs,
        S_Tau=mats,
        V_Tau=vs,
        I=np.eye(4),
        N=np.ones(10),
        m=np.asarray(fx["prop"]) * 1000,
        annotations=fx["annot_names"],
        trait_names=fx["traits"],
        prop=np.asarray(fx["prop"]),
        select_names=fx["annot_names"][1:],
        select=np.array([1, 1]),
    )
    res = enrich(sc, fx["model"], fx["params"])
    np.testing.assert_allclose(res.enrichment["Enrichment"].to_numpy(), fx["enrichment"], rtol=1e-8)
    np.testing.assert_allclose(res.enrichment["Enrichment_SE"].to_numpy(), fx["enrichment_se"], rtol=1e-8)
    np.testing.assert_allclose(res.enrichment["Enrichment_p_value"].to_numpy(), fx["enrichment_p"], atol=1e-6)


def test_enrich_reads_a_saved_covstruc(fits, tmp_path):
    p = fits["cont"].save(tmp_path / "s.npz")
    a = enrich(str(p), "F1 =~ T1 + T2 + T3", "F1~~F1")
    b = enrich(fits["cont"], "F1 =~ T1 + T2 + T3", "F1~~F1")
    assert a.enrichment.equals(b.enrichment)


def test_enrich_bad_input(fits):
    with pytest.raises(ModelError, match="not parameters of the model"):
        enrich(fits["cont"], "F1 =~ T1 + T2 + T3", "F2~~F2")
    with pytest.raises(InputError, match="params must name"):
        enrich(fits["cont"], "F1 =~ T1 + T2 + T3", [])
    with pytest.raises(InputError, match="fix"):
        enrich(fits["cont"], "F1 =~ T1 + T2 + T3", "F1~~F1", fix="loadings")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="All parameters are being fixed"):
        enrich(
            fits["cont"],
            "F1 =~ T1 + T2 + T3",
            "F1=~T2",
            fix="regressions",
            fixparam=["F1~~F1", "T1~~T1", "T2~~T2", "T3~~T3", "F1=~T2"],
        )
    with pytest.raises(ModelError, match="lavaan syntax"):
        enrich(fits["cont"], "F1", "F1~~F1")


def test_cli_chain_s_ldsc_then_enrich(fits, tmp_path, monkeypatch):
    import polars as pl
    import pyarrow.parquet as pq

    from polgen.cli import main
    from polgen.errors import PolgenError

    monkeypatch.chdir(D)
    s_out = tmp_path / "s.npz"
    rc = main(
        ["gsem", "s-ldsc", "--traits", "T1.sumstats.gz", "T2.sumstats.gz", "T3.sumstats.gz", "--ld", "annot/baseline.",
         "--wld", "weights/weights.", "--frq", "frq/1000G.", "--trait-names", "T1", "T2", "T3", "--n-blocks", "20",
         "--out", str(s_out), "-q"]
    )  # fmt: skip
    assert rc == 0
    back = StratifiedCovStruc.load(s_out)
    for a, b in zip(back.V, fits["cont"].V):
        np.testing.assert_array_equal(a, b)
    e_out = tmp_path / "e.parquet"
    args = ["gsem", "enrich", "--s-covstruc", str(s_out), "--model", "F1 =~ T1 + T2 + T3; F1 ~~ F1"]
    assert main([*args, "--params", "F1~~F1", "--out", str(e_out), "-q"]) == 0
    got = pl.read_parquet(e_out)
    want = enrich(fits["cont"], "F1 =~ T1 + T2 + T3\nF1 ~~ F1", "F1~~F1")
    assert got.equals(want.enrichment)
    meta = pq.read_schema(e_out).metadata
    assert len(json.loads(meta[b"polgen.enrich_base"])) == 7
    # a failing run leaves nothing behind
    bad = tmp_path / "bad.parquet"
    try:
        rc = main([*args, "--params", "F9~~F9", "--out", str(bad), "-q"])
    except PolgenError:
        rc = 1
    assert rc != 0 and not bad.exists()


def test_enrich_smoothing_and_negative_heritabilities_match_r():
    # hand-made covstruc (tests/data/make/gsem_sldsc_enrich.py make_handmade): AL2's S is not positive
    # definite (nearPD), BL2's heritabilities are all negative (not analysed), CL2's V is not PD
    h = json.loads((D / "handmade.json").read_text())
    S = [np.asarray(x) for x in h["S"]]
    V = [np.asarray(x) for x in h["V"]]
    sc = StratifiedCovStruc(
        S=S,
        V=V,
        S_Tau=S,
        V_Tau=V,
        I=np.eye(3),
        N=np.ones(6),
        m=np.asarray(h["prop"]) * 100,
        annotations=h["annotations"],
        trait_names=h["trait_names"],
        prop=np.asarray(h["prop"]),
        select_names=h["select_names"],
        select=np.asarray(h["select"]),
    )
    res = enrich(sc, "F1 =~ T1 + T2 + T3", "F1~~F1")
    ref = R["enrich"]["handmade"]
    t = res.enrichment
    assert t["Annotation"].to_list() == ref["ann.1"]
    assert t["Warning"][2] == "This annotation was not analyzed as all heritability estimates were below 0."
    for col, key, rtol in (
        ("Cov_Smooth", "cov_smooth", 1e-8),
        ("Z_smooth", "z_smooth", 1e-8),
        ("Enrichment", "enr", 1e-6),
        ("Enrichment_SE", "enr_se", 1e-6),
        ("Enrichment_p_value", "enr_p", 1e-4),
    ):
        got = t[col].cast(float).fill_null(np.nan).to_numpy()
        want = _num(ref[f"{key}.1"])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=1e-12)
    assert t["Cov_Smooth"][1] > 0.01  # the smoothing happened
