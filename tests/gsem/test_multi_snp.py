"""multi_snp / multi_gene against R GenomicSEM's multiSNP / multiGene and usermodel on their output
(tests/data/gsem/r/multi, made by tests/data/make/gsem_multi.py) and the ../shared fixtures
multisnp_synth / multigene_synth (copied under tests/data/gsem/fixtures/newer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import gsem_fixture
from polgen.errors import InputError, SchemaError
from polgen.gsem import MultiResult, multi_gene, multi_snp

DATA = Path(__file__).resolve().parents[1] / "data" / "gsem" / "r" / "multi"
INP = json.loads((DATA / "inputs.json").read_text())
OUT = json.loads((DATA / "outputs.json").read_text())
SNPS = pl.DataFrame(INP["snps"])
GENES = pl.DataFrame(INP["genes"])
CASES = {c["case"]: c for c in INP["multi_cases"]}


def _run(name: str, model: bool = False, estimation: str = "DWLS") -> MultiResult:
    c = CASES[name]
    ld = INP["ld"][c["ld"]]
    rows = [i - 1 for i in INP["multi_rows"][name]]
    fn = multi_snp if c["kind"] == "snps" else multi_gene
    frame = (SNPS if c["kind"] == "snps" else GENES)[rows]
    return fn(
        INP["covstruc"][c["covstruc"]],
        frame,
        (np.array(ld["matrix"]), ld["names"]),
        model=c["model"] if model else None,
        estimation=estimation,  # type: ignore[arg-type]
    )


def _close(a, b, scale_rel=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=0, atol=scale_rel * np.abs(b).max())


@pytest.mark.parametrize("name", ["ms_k3_f2", "ms_k3_f3_equal", "mg_k3_f2", "mg_k3_f3_equal"])
def test_matrices_match_r(name):
    res = _run(name)
    assert res.names == OUT[name]["names"]
    _close(res.S_full, OUT[name]["S_full"])
    _close(res.V_full, OUT[name]["V_full"])
    assert not res.S_smoothed and not res.V_smoothed


def test_allele_flip_as_r():
    res = _run("ms_k3_f2")
    # the LD names rs2 as rs2_T_C but the sumstats have C as its A1: the LD changes sign
    assert res.ld[0, 1] == pytest.approx(-0.3) and res.ld[1, 0] == pytest.approx(-0.3)
    assert res.ids["SNP"].to_list() == ["rs1", "rs2"]  # put in the LD's order (input was rs2, rs1)
    v = 2 * np.array(res.ids["MAF"]) * (1 - np.array(res.ids["MAF"]))
    assert res.S_full[1, 0] == pytest.approx(-0.3 * np.sqrt(v[0] * v[1]), rel=1e-14)


def test_unequal_ld_pins_r_difference():
    """R fills every cross-SNP cross-trait covariance with the last SNP pair's LD; polgen uses each
    pair's own.  Everything else equals R, and R's entries are polgen's rescaled by that LD."""
    res = _run("ms_k2_f3_unequal")
    R = np.array(OUT["ms_k2_f3_unequal"]["V_full"])
    _close(res.S_full, OUT["ms_k2_f3_unequal"]["S_full"])
    f, k = 3, 2
    n = f + k
    pos = {}
    for c in range(n):
        for r in range(c, n):
            pos[(r, c)] = len(pos)
    last = res.ld[2, 1]
    expect = res.V_full.copy()
    changed = 0
    for j in range(f):
        for i in range(f):
            for t in range(k):
                for u in range(k):
                    if i != j and t != u:
                        p, q = pos[(f + t, j)], pos[(f + u, i)]
                        expect[p, q] = res.V_full[p, q] * last / res.ld[j, i]
                        changed += abs(expect[p, q] - res.V_full[p, q]) > 1e-12 * abs(res.V_full[p, q])
    assert changed == 8  # the pairs (rs1, rs3) and (rs1, rs4); (rs3, rs4) is the last pair
    _close(expect, R)
    assert not np.allclose(res.V_full, R, rtol=0.1, atol=0)  # the difference is not rounding


def test_shared_fixtures():
    d = json.loads(gsem_fixture("newer", "multisnp_synth.json").read_text())
    traits = d["traits"]
    frame = pl.DataFrame(
        {
            "SNP": d["snp_names"],
            "MAF": d["maf"],
            "A1": d["a1"],
            **{f"beta.{t}": [b[j] for b in d["beta"]] for j, t in enumerate(traits)},
            **{f"se.{t}": [s[j] for s in d["se"]] for j, t in enumerate(traits)},
        }
    )
    cs = {"S": d["s_ld"], "V": d["v_ld"], "I": d["i_ld"], "trait_names": traits}
    res = multi_snp(cs, frame, np.array(d["ld"]))
    _close(res.S_full, d["s_full"])
    _close(res.V_full, d["v_full"])
    g = json.loads(gsem_fixture("newer", "multigene_synth.json").read_text())
    genes = pl.DataFrame(
        {
            "Gene": g["gene_names"],
            "Panel": ["P"] * len(g["gene_names"]),
            "HSQ": g["hsq"],
            **{f"beta.{t}": [b[j] for b in g["beta"]] for j, t in enumerate(traits)},
            **{f"se.{t}": [s[j] for s in g["se"]] for j, t in enumerate(traits)},
        }
    )
    cs = {"S": g["s_ld"], "V": g["v_ld"], "I": g["i_ld"], "trait_names": traits}
    res = multi_gene(cs, genes, pl.DataFrame(np.array(g["ld"]), schema=g["gene_names"]))
    _close(res.S_full, g["s_full"])
    _close(res.V_full, g["v_full"])


FITS = [(name, est) for name in ("ms_k3_f2", "ms_k3_f3_equal", "mg_k3_f2", "mg_k3_f3_equal") for est in ("DWLS", "ML")]


@pytest.mark.parametrize(("name", "est"), FITS)
def test_fit_matches_r_usermodel(name, est):
    res = _run(name, model=True, estimation=est)
    assert res.fit is not None
    p = res.fit.parameters
    R = OUT[name][est]
    keys = list(zip(p["lhs"].to_list(), p["op"].to_list(), p["rhs"].to_list()))
    ests = dict(zip(keys, p["est"].to_list()))
    ses = dict(zip(keys, p["se"].to_list()))
    free = [i for i, s in enumerate(R["se"]) if s != "NA"]
    scale = max(abs(R["est"][i]) for i in free)
    n = 0
    for i in free:
        key = (R["lhs"][i], R["op"][i], R["rhs"][i])
        # 1e-6 relative, or 1e-6 of the model's largest estimate for estimates near zero (the
        # optimisers stop within ~1e-9 of each other there)
        assert ests[key] == pytest.approx(R["est"][i], rel=1e-6, abs=1e-6 * scale), key
        assert ses[key] == pytest.approx(float(R["se"][i]), rel=1e-6), key
        n += 1
    assert n >= 7
    if R.get("printed"):
        # R's usermodel returned NULL (its standardized model did not converge) after printing
        # the unstandardized table with 7 significant digits: that table is what R gives
        return
    assert float(res.fit.fit_all["chisq"][0]) == pytest.approx(R["chisq"], rel=1e-5)


def test_bad_input():
    cs = INP["covstruc"]["main"]
    two = SNPS[:2]
    with pytest.raises(InputError, match="3x3 but 2 SNPs"):
        multi_snp(cs, two, np.eye(3))
    with pytest.raises(InputError, match="not in the sumstats"):
        multi_snp(cs, SNPS, (np.eye(2), ["rs1_A_G", "rs99_A_G"]))
    with pytest.raises(InputError, match="does not match SNPlist"):
        multi_snp(cs, SNPS, (np.eye(2), ["rs1_A_G", "rs2_C_T"]), SNPlist=["rs1", "rs3"])
    with pytest.raises(InputError, match="not positive definite"):
        multi_snp(cs, two, np.array([[1.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(InputError, match="not positive definite"):
        multi_snp(cs, SNPS[:3], np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]]))
    with pytest.raises(InputError, match="not symmetric"):
        multi_snp(cs, two, np.array([[1.0, 0.2], [0.1, 1.0]]))
    with pytest.raises(InputError, match="square"):
        multi_snp(cs, two, np.ones((2, 3)))
    with pytest.raises(InputError, match="MAF"):
        multi_snp(cs, two.with_columns(pl.lit(0.0).alias("MAF")), np.eye(2))
    with pytest.raises(InputError, match="beta.T2"):
        multi_snp(cs, two.with_columns(pl.lit(None, pl.Float64).alias("beta.T2")), np.eye(2))
    with pytest.raises(SchemaError, match="HSQ"):
        multi_gene(cs, GENES[:2].drop("HSQ"), np.eye(2))
    with pytest.raises(InputError, match="HSQ"):
        multi_gene(cs, GENES[:2].with_columns(pl.lit(None, pl.Float64).alias("HSQ")), np.eye(2))
    with pytest.raises(InputError, match="estimation"):
        multi_snp(cs, two, np.eye(2), estimation="GLS")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="more than once"):
        multi_snp(cs, pl.concat([two, two[:1]]), (np.eye(2), ["rs1", "rs2"]))


def test_snplist_and_ld_file(tmp_path):
    cs = INP["covstruc"]["main"]
    ld = pl.DataFrame({"rs1_A_G": [1.0, -0.3], "rs2_T_C": [-0.3, 1.0]})
    path = tmp_path / "ld.csv"
    ld.write_csv(path)
    a = multi_snp(cs, SNPS, path, SNPlist=["rs2", "rs1"])
    b = _run("ms_k3_f2")
    # the file holds -0.3 where the R case holds 0.3: after the rs2 allele flip both are +-0.3
    assert a.ld[0, 1] == pytest.approx(0.3)
    np.testing.assert_allclose(a.S_full[2:, :2], b.S_full[2:, :2], rtol=1e-15)


def test_cli_multi_snp(tmp_path, capsys):
    from polgen.cli import main
    from polgen.gsem import CovStruc, usermodel

    cs = CovStruc.from_mapping(INP["covstruc"]["main"])
    cs.save(tmp_path / "cs.json")
    SNPS.write_parquet(tmp_path / "snps.parquet")
    ld = INP["ld"]["snp2"]
    pl.DataFrame({"SNP": ld["names"], **{n: col for n, col in zip(ld["names"], ld["matrix"])}}).write_csv(
        tmp_path / "ld.csv"
    )
    model = CASES["ms_k3_f2"]["model"].replace("\n", "; ")
    argv = ["gsem", "multi-snp", "--sumstats", str(tmp_path / "snps.parquet"), "--covstruc", str(tmp_path / "cs.json")]
    argv += ["--ld", str(tmp_path / "ld.csv"), "--model", model, "--out", str(tmp_path / "joint.json")]
    assert main([*argv, "--fit-out", str(tmp_path / "fit.parquet")]) == 0
    assert "F1" in capsys.readouterr().out
    joint = CovStruc.load(tmp_path / "joint.json")
    _close(joint.S, OUT["ms_k3_f2"]["S_full"])
    _close(joint.V, OUT["ms_k3_f2"]["V_full"])
    fit = pl.read_parquet(tmp_path / "fit.parquet")
    ref = usermodel(joint, CASES["ms_k3_f2"]["model"]).parameters
    assert fit["est"].to_list() == ref["est"].to_list()
    assert main(argv) != 0  # joint.json exists: refused without --overwrite
    assert "exists" in capsys.readouterr().err


def test_cli_multi_gene_and_add(tmp_path, capsys):
    from polgen.cli import main
    from polgen.gsem import CovStruc, SnpMatrices

    CovStruc.from_mapping(INP["covstruc"]["main"]).save(tmp_path / "cs.json")
    GENES.write_parquet(tmp_path / "genes.parquet")
    ld = INP["ld"]["gene2"]
    pl.DataFrame(ld["matrix"], schema=ld["names"], orient="row").write_csv(tmp_path / "ld.csv")
    base = ["--covstruc", str(tmp_path / "cs.json")]
    genes = ["--genes", str(tmp_path / "genes.parquet")]
    assert (
        main(["gsem", "multi-gene", *genes, *base, "--ld", str(tmp_path / "ld.csv"), "--out", str(tmp_path / "g.json")])
        == 0
    )
    _close(CovStruc.load(tmp_path / "g.json").V, OUT["mg_k3_f2"]["V_full"])
    SNPS.write_parquet(tmp_path / "snps.parquet")
    assert main(["gsem", "add-snps", "--sumstats", str(tmp_path / "snps.parquet"), *base, "--GC", "conserv",
                 "--batch-size", "5", "--out", str(tmp_path / "add")]) == 0  # fmt: skip
    assert "8 rows" in capsys.readouterr().out
    back = SnpMatrices.from_frame(pl.scan_parquet(tmp_path / "add" / "part-*.parquet"))
    for i in range(8):
        _close(back.V_full[i], OUT["add_conserv"]["V_full"][i])
    assert (
        main(["gsem", "add-genes", "--genes", str(tmp_path / "genes.parquet"), *base, "--out", str(tmp_path / "ag")])
        == 0
    )
    assert "5 rows" in capsys.readouterr().out
