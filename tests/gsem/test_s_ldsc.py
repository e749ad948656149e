"""polgen.gsem.s_ldsc against R GenomicSEM's s_ldsc (tests/data/gsem/r/sldsc_enrich, made by
tests/data/make/gsem_sldsc_enrich.py), its save/load, and its typed errors on bad reference files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from polgen.errors import InputError, SchemaError
from polgen.gsem.stratified import StratifiedCovStruc, s_ldsc

D = Path(__file__).resolve().parents[1] / "data" / "gsem" / "r" / "sldsc_enrich"
R = json.loads((D / "r_out.json").read_text())
TRAITS = ["T1", "T2", "T3"]
CASES = {
    "cont": dict(n_blocks=20, exclude_cont=True),
    "all": dict(n_blocks=30, exclude_cont=False, sample_prev=[0.5, None, None], population_prev=[0.1, None, None]),
    "extra": dict(n_blocks=25, exclude_cont=True),
}


def run(case: str, base: Path = D) -> StratifiedCovStruc:
    ld: object = str(base / "annot" / "baseline.")
    if case == "extra":
        ld = [str(base / "annot" / "baseline."), "extra/extra."]
    return s_ldsc(
        [base / f"{t}.sumstats.gz" for t in TRAITS],
        ld=ld,
        wld=base / "weights" / "weights.",
        frq=base / "frq" / "1000G.",
        trait_names=TRAITS,
        **CASES[case],  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def fits(tmp_path_factory) -> dict[str, StratifiedCovStruc]:
    out = {c: run(c) for c in ("cont", "all")}
    # the extra set is named by its prefix as given (R: ld2[i]); run where that prefix is relative
    import os

    cwd = os.getcwd()
    os.chdir(D)
    try:
        out["extra"] = run("extra", Path("."))
    finally:
        os.chdir(cwd)
    return out


def rmat(v, k):
    return np.reshape(np.asarray(v, dtype=float), (k, k), order="F")


def relerr(a, b) -> float:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.mark.parametrize("case", list(CASES))
def test_s_ldsc_matches_r(fits, case):
    res, ref = fits[case], R["sldsc"][case]
    assert res.annotations == ref["names"]
    assert res.select_names == ref["Select_names"]
    assert res.select.tolist() == [int(v) for v in ref["Select"]]
    for f in range(len(res.annotations)):
        assert relerr(res.S[f], rmat(ref[f"S.{f + 1}"], 3)) < 1e-9
        assert relerr(res.S_Tau[f], rmat(ref[f"S_Tau.{f + 1}"], 3)) < 1e-9
        assert relerr(res.V[f], rmat(ref[f"V.{f + 1}"], 6)) < 1e-8
        assert relerr(res.V_Tau[f], rmat(ref[f"V_Tau.{f + 1}"], 6)) < 1e-8
    assert relerr(res.I, rmat(ref["I"], 3)) < 1e-9
    assert relerr(res.N, ref["N"]) < 1e-12
    assert relerr(res.m, ref["m"]) < 1e-12
    assert relerr(res.prop, ref["Prop"]) < 1e-12


def test_baseline_s_is_the_sum_of_the_taus(fits):
    res = fits["cont"]  # binary annotations whose M counts are their SNP counts over MAF > 5%
    np.testing.assert_allclose(res.S[0], sum(res.S_Tau), rtol=1e-12)


def test_liability_scale_only_touches_the_case_trait(fits):
    f = fits["all"].extra["liability_factors"]
    assert f[0] > 1 and f[1:] == [1.0, 1.0]


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_load_roundtrip(fits, tmp_path, suffix):
    res = fits["cont"]
    p = res.save(tmp_path / f"s{suffix}")
    back = StratifiedCovStruc.load(p)
    assert back.annotations == res.annotations and back.trait_names == res.trait_names
    for a, b in zip(back.V, res.V):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.select, res.select)
    cs = back.covstruc("AL2", tau=True)
    np.testing.assert_array_equal(cs.S, res.S_Tau[1])
    assert [x.name for x in tmp_path.iterdir()] == [f"s{suffix}"]


def test_load_rejects_other_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"S": [[1]]}))
    with pytest.raises(SchemaError, match="s_ldsc"):
        StratifiedCovStruc.load(p)
    with pytest.raises(InputError, match="not found"):
        StratifiedCovStruc.load(tmp_path / "absent.npz")


def test_sldsc_synth_fixture_loads_as_a_stratified_covstruc():
    fx = json.loads((D.parents[1] / "fixtures" / "newer" / "sldsc_synth.json").read_text())
    # the fixture's inputs (LD-score and sumstats files) are not shipped; its outputs must load and
    # be internally consistent: V symmetric with non-negative diagonals, S_Tau summing like R's
    obj = {
        "kind": "polgen.gsem.s_ldsc",
        "annotations": fx["annot_names"],
        "trait_names": fx["trait_names"],
        "S": fx["s"],
        "V": fx["v"],
        "S_Tau": fx["s_tau"],
        "V_Tau": fx["v_tau"],
        "I": fx["i"],
        "m": fx["m"],
    }
    res = StratifiedCovStruc.from_dict(obj)
    assert res.prop.tolist() == pytest.approx([1.0, 590 / 1400, 511 / 1400])
    # S = overlap @ tau: the baseline row of the overlap is 1 when the M counts are the annotations'
    # SNP counts, so the baseline S is the sum of the per-annotation S_Tau (in R's output as in ours)
    np.testing.assert_allclose(res.S[0], sum(res.S_Tau), rtol=1e-12)
    for v in res.V + res.V_Tau:
        np.testing.assert_allclose(v, v.T, rtol=1e-12)
        assert np.all(np.diag(v) > 0)


@pytest.fixture
def copy(tmp_path) -> Path:
    dst = tmp_path / "ref"
    shutil.copytree(D, dst, ignore=shutil.ignore_patterns("r_out.json"))
    return dst


def test_missing_m_file_names_it(copy):
    (copy / "annot" / "baseline.2.l2.M_5_50").unlink()
    with pytest.raises(InputError, match="M file for chromosome 2") as ei:
        run("cont", copy)
    assert ei.value.path is not None and ei.value.path.endswith("baseline.2.l2.M_5_50")


def test_m_counts_not_matching_the_columns(copy):
    (copy / "annot" / "baseline.1.l2.M_5_50").write_text("10 20 30\n")
    with pytest.raises(SchemaError, match="3 counts for 5") as ei:
        run("cont", copy)
    assert ei.value.path is not None and ei.value.path.endswith("baseline.1.l2.M_5_50")


def test_annot_snps_not_matching_ld_scores(copy):
    import gzip

    p = copy / "annot" / "baseline.1.annot.gz"
    lines = gzip.decompress(p.read_bytes()).decode().splitlines(keepends=True)
    lines[5] = lines[5].replace("\trs5\t", "\trs999999\t")
    p.write_bytes(gzip.compress("".join(lines).encode()))
    with pytest.raises(InputError, match="not in the annotation file") as ei:
        run("cont", copy)
    assert ei.value.column == "SNP" and ei.value.row == "rs5"
    assert ei.value.path is not None and ei.value.path.endswith("baseline.1.annot.gz")


def test_annot_columns_not_matching_ld_columns(copy):
    import gzip

    p = copy / "annot" / "baseline.1.annot.gz"
    text = gzip.decompress(p.read_bytes()).decode().replace("\tB\t", "\tQ\t", 1)
    p.write_bytes(gzip.compress(text.encode()))
    q = copy / "annot" / "baseline.2.annot.gz"
    q.write_bytes(gzip.compress(gzip.decompress(q.read_bytes()).decode().replace("\tB\t", "\tQ\t", 1).encode()))
    with pytest.raises(SchemaError, match="does not match LD-score column 'BL2'") as ei:
        run("cont", copy)
    assert ei.value.column == "Q"


def test_missing_frq_and_annot_files(copy):
    (copy / "frq" / "1000G.2.frq").unlink()
    with pytest.raises(InputError, match="frequency file for chromosome 2"):
        run("cont", copy)
    (copy / "annot" / "baseline.1.annot.gz").unlink()
    with pytest.raises(InputError, match="annotation file for chromosome 1"):
        run("cont", copy)


def test_cli_writes_nothing_when_a_file_is_missing(copy, tmp_path):
    from polgen.cli import main
    from polgen.errors import PolgenError

    (copy / "annot" / "baseline.1.l2.M_5_50").unlink()
    out = tmp_path / "s.npz"
    args = ["gsem", "s-ldsc", "--traits", *[str(copy / f"{t}.sumstats.gz") for t in TRAITS]]
    args += ["--ld", str(copy / "annot" / "baseline."), "--wld", str(copy / "weights" / "weights.")]
    args += ["--frq", str(copy / "frq" / "1000G."), "--out", str(out), "-q"]
    try:
        rc = main(args)
    except PolgenError:
        rc = 1
    assert rc != 0
    assert not out.exists() and not any(p.name.startswith(".s.npz") for p in tmp_path.iterdir())


def test_kernels_match_dense_numpy():
    from polgen.kernels.ldsc import block_bounds
    from polgen.kernels.sldsc import block_crossprod, jackknife

    rng = np.random.default_rng(5)
    X = rng.gamma(2.0, 3.0, (500, 4))
    idx = rng.permutation(500)[:350]
    scale, w, y = rng.uniform(0.8, 1.2, 350), rng.uniform(0.1, 1.0, 350), rng.normal(2.0, 1.0, 350)
    starts, ends = block_bounds(350, 7)
    cols = np.array([0, 2, 3])
    xtx, xty = block_crossprod(X, cols, idx, scale, w, y, starts, ends)
    A = np.column_stack([X[idx][:, cols] * scale[:, None], np.ones(350)]) * w[:, None]
    for b, (s0, e0) in enumerate(zip(starts, ends)):
        np.testing.assert_allclose(xtx[b], A[s0:e0].T @ A[s0:e0], rtol=1e-12)
        np.testing.assert_allclose(xty[b], A[s0:e0].T @ (y * w)[s0:e0], rtol=1e-12)
    reg, delete, pseudo = jackknife(xtx, xty)
    np.testing.assert_allclose(reg, np.linalg.lstsq(A, y * w, rcond=None)[0], rtol=1e-9)
    keep = np.ones(350, dtype=bool)
    keep[starts[3] : ends[3]] = False
    np.testing.assert_allclose(delete[3], np.linalg.lstsq(A[keep], (y * w)[keep], rcond=None)[0], rtol=1e-9)
    np.testing.assert_allclose(pseudo[3], 7 * reg - 6 * delete[3], rtol=1e-12)


@pytest.mark.parametrize(("bad", "match"), [("abc", "could not parse `abc`"), ("", "missing LD score")])
def test_bad_ld_score_value_names_file_and_column(copy, bad, match):
    import gzip

    p = copy / "annot" / "baseline.2.l2.ldscore.gz"
    lines = gzip.decompress(p.read_bytes()).decode().splitlines(keepends=True)
    parts = lines[10].split("\t")
    parts[4] = bad  # the AL2 column
    lines[10] = "\t".join(parts)
    p.write_bytes(gzip.compress("".join(lines).encode()))
    with pytest.raises(InputError, match=match) as ei:
        run("cont", copy)
    assert ei.value.path is not None and ei.value.path.endswith("baseline.2.l2.ldscore.gz")
    assert "AL2" in str(ei.value)
