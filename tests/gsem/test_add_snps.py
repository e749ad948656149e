"""add_snps / add_genes against R GenomicSEM's addSNPs / addGenes (tests/data/gsem/r/multi, made by
tests/data/make/gsem_multi.py), the streamed run folder, and bad input flagged per row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from polgen.errors import InputError, SchemaError
from polgen.gsem import SnpMatrices, add_genes, add_snps
from polgen.schema import validate

DATA = Path(__file__).resolve().parents[1] / "data" / "gsem" / "r" / "multi"
INP = json.loads((DATA / "inputs.json").read_text())
OUT = json.loads((DATA / "outputs.json").read_text())
SNPS = pl.DataFrame(INP["snps"])
GENES = pl.DataFrame(INP["genes"])
CASES = {c["case"]: c for c in INP["add_cases"]}


def _run(case: dict) -> SnpMatrices:
    cs = INP["covstruc"][case["covstruc"]]
    if case["kind"] == "snps":
        res = add_snps(cs, SNPS, SNPSE=case["SNPSE"], GC=case["GC"])
    else:
        res = add_genes(cs, GENES, GC=case["GC"])
    assert isinstance(res, SnpMatrices)
    return res


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_r(name):
    res = _run(CASES[name])
    S = np.array(OUT[name]["S_full"])
    V = np.array(OUT[name]["V_full"])
    assert res.S_full.shape == S.shape and res.V_full.shape == V.shape
    # relative to each matrix's scale (nearPD-smoothed entries: R's iterations to 1e-7 converge the same way)
    for i in range(S.shape[0]):
        np.testing.assert_allclose(res.S_full[i], S[i], rtol=0, atol=1e-12 * np.abs(S[i]).max())
        np.testing.assert_allclose(res.V_full[i], V[i], rtol=0, atol=1e-12 * np.abs(V[i]).max())
    assert res.valid.all()


def test_smoothing_flags_follow_r():
    res = _run(CASES["add_standard"])
    # rs6 has beta 1.9: its S_full is not positive definite and R smooths it
    assert res.S_smoothed.tolist() == [i == 5 for i in range(8)]
    assert not res.V_smoothed.any()
    vnpd = _run(CASES["add_vnpd"])  # a cross-trait intercept of 1.3: every V_full is smoothed
    assert vnpd.V_smoothed.all()
    assert np.all(np.linalg.eigvalsh(vnpd.V_full) > 0)


def test_gc_modes_differ_as_r():
    std, cons = _run(CASES["add_standard"]), _run(CASES["add_conserv"])
    I = np.array(INP["covstruc"]["main"]["I"])
    d = np.maximum(np.diag(I), 1.0)
    # V_full[1 + t, 1 + t] = (se * c * var)^2 with c = sqrt(I_tt) (standard) or I_tt (conserv)
    ratio = cons.V_full[0, 1:4, 1:4].diagonal() / std.V_full[0, 1:4, 1:4].diagonal()
    np.testing.assert_allclose(ratio, d, rtol=1e-12)


def test_stream_matches_memory_and_schema(tmp_path):
    mem = _run(CASES["add_standard"])
    cs = INP["covstruc"]["main"]
    lf = add_snps(cs, SNPS, out=tmp_path / "run", batch_size=3)
    assert isinstance(lf, pl.LazyFrame)
    validate(tmp_path / "run", "gsem_add_snps")
    back = SnpMatrices.from_frame(lf, names=mem.names)
    # the lower triangles are stored: a smoothed S_full / the input V are symmetric to the last bit only
    np.testing.assert_allclose(back.S_full, mem.S_full, rtol=1e-14, atol=0)
    np.testing.assert_allclose(back.V_full, mem.V_full, rtol=0, atol=1e-20)
    assert back.ids["SNP"].to_list() == SNPS["SNP"].to_list()
    assert back.S_smoothed.tolist() == mem.S_smoothed.tolist()
    assert len(list((tmp_path / "run").glob("part-*.parquet"))) == 3
    frame = mem.to_frame()
    validate(frame, "gsem_add_snps")
    assert frame.height == 8 and "S_2_1" in frame.columns and "V_10_10" in frame.columns
    # S_2_1 is the covariance of the SNP and T1: var * beta
    v = 2 * SNPS["MAF"] * (1 - SNPS["MAF"])
    ok = ~mem.S_smoothed
    np.testing.assert_allclose(frame["S_2_1"].to_numpy()[ok], (v * SNPS["beta.T1"]).to_numpy()[ok], rtol=1e-14)


def test_bad_rows_are_flagged_not_fatal(tmp_path):
    bad = SNPS.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(0.0).otherwise(pl.col("MAF")).alias("MAF"),
        pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("beta.T2")).alias("beta.T2"),
        pl.when(pl.int_range(pl.len()) == 3).then(-0.01).otherwise(pl.col("se.T3")).alias("se.T3"),
    )
    res = add_snps(INP["covstruc"]["main"], bad)
    assert res.valid.tolist() == [True, False, False, False, True, True, True, True]
    assert "MAF" in res.warning[1] and "beta" in res.warning[2] and "SE" in res.warning[3]
    assert np.isnan(res.S_full[1:4]).all() and np.isnan(res.V_full[1:4]).all()
    good = _run(CASES["add_standard"])
    np.testing.assert_array_equal(res.S_full[4:], good.S_full[4:])
    with pytest.raises(InputError, match="row 2"):
        res.covstruc(2)
    lf = add_snps(INP["covstruc"]["main"], bad, out=tmp_path / "bad", batch_size=4)
    assert lf.select(pl.col("valid").sum()).collect().item() == 5


def test_row_covstruc_fits_with_usermodel():
    """usermodel on one SNP's S_full / V_full is the per-SNP fit of user_gwas(fix_measurement=False)."""
    from polgen.gsem import user_gwas, usermodel

    cs = INP["covstruc"]["main"]
    res = _run(CASES["add_standard"])
    model = "F1 =~ T1 + T2 + T3\nF1 ~ SNP"
    for i in (0, 3):
        fit = usermodel(res.covstruc(i), model)
        row = fit.parameters.filter((pl.col("op") == "~") & (pl.col("rhs") == "SNP"))
        gw = user_gwas(SNPS[i : i + 1], cs, model, fix_measurement=False)
        assert row["est"][0] == pytest.approx(gw["est"][0], rel=1e-8)
        assert row["se"][0] == pytest.approx(gw["se"][0], rel=1e-8)


def test_input_errors():
    cs = INP["covstruc"]["main"]
    with pytest.raises(SchemaError, match="HSQ"):
        add_genes(cs, GENES.drop("HSQ"))
    with pytest.raises(SchemaError, match="MAF"):
        add_snps(cs, SNPS.drop("MAF"))
    with pytest.raises(InputError, match="GC"):
        add_snps(cs, SNPS, GC="strict")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="SNPSE"):
        add_snps(cs, SNPS, SNPSE=-1.0)
    genes = add_genes(cs, GENES.with_columns(pl.when(pl.col("Gene") == "G2").then(0.0).otherwise("HSQ").alias("HSQ")))
    assert genes.valid.tolist() == [True, False, True, True, True]
    assert "HSQ" in genes.warning[1]


def test_namespace_aliases():
    import polgen  # noqa: F401  (registers df.gsem / lf.gsem)

    cs = INP["covstruc"]["main"]
    res = SNPS.lazy().gsem.add_snps(cs, GC="conserv")
    np.testing.assert_array_equal(res.V_full, add_snps(cs, SNPS, GC="conserv").V_full)
    genes = GENES.gsem.add_genes(cs)
    np.testing.assert_array_equal(genes.S_full, add_genes(cs, GENES).S_full)
    ld = INP["ld"]["snp2"]
    joint = SNPS.gsem.multi_snp(cs, (np.array(ld["matrix"]), ld["names"]))
    np.testing.assert_allclose(joint.S_full, OUT["ms_k3_f2"]["S_full"], rtol=1e-14)
    ld = INP["ld"]["gene2"]
    joint = GENES.gsem.multi_gene(cs, (np.array(ld["matrix"]), ld["names"]))
    np.testing.assert_allclose(joint.V_full, OUT["mg_k3_f2"]["V_full"], rtol=1e-13)


def test_stream_resume_and_refuse(tmp_path):
    from polgen.errors import OutputExistsError

    cs = INP["covstruc"]["main"]
    out = tmp_path / "run"
    first = add_snps(cs, SNPS, out=out, batch_size=4).collect()
    with pytest.raises(OutputExistsError):
        add_snps(cs, SNPS, out=out, batch_size=4)
    again = add_snps(cs, SNPS, out=out, batch_size=4, resume=True).collect()
    assert again.equals(first)
    other = add_snps(cs, SNPS, out=out, batch_size=4, GC="none", overwrite=True).collect()
    assert not other.equals(first) and other.height == 8
