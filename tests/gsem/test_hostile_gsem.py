"""Hostile summary statistics through scan_sumstats, munge, sumstats and the GWAS functions.

A small valid table is damaged by hypothesis (wrong delimiters, empty files, duplicated SNP ids,
mixed-case / strand-ambiguous / junk alleles, P = 0, P > 1, SE = 0, NaN / inf, huge N, non-numeric
text, missing columns) and written as tab / whitespace / comma / gz / parquet.  Every call must either
raise a :class:`polgen.errors.PolgenError` or return a result that obeys the documented rules
(finite Z / beta / se, alleles A/C/G/T, removed rows counted, bad SNPs flagged in the GWAS output) —
never another exception type, never a silently wrong number, never a stray file in the output
directory.  The number of cases tried is written to the pytest cache (``polgen/hostile``) and
printed at the end of the module.
"""

from __future__ import annotations

import gzip
import math
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile import Cases
from polgen.io.sumstats import scan_sumstats
from tests.engine.test_scaleout_dask import USER_MODEL, gsem_inputs

CASES = Cases()
_count_cases = CASES.fixture()
attempt = CASES.attempt
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def stray(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]


# -- a valid base table ----------------------------------------------------------------------
N_SNP = 40
RNG = np.random.default_rng(7)
BASES = ["A", "C", "G", "T"]
_a1 = RNG.choice(["A", "C"], N_SNP)
_a2 = np.where(_a1 == "A", "G", "T")
REF = pl.DataFrame(
    {
        "SNP": [f"rs{i}" for i in range(N_SNP)],
        "CHR": ["1"] * N_SNP,
        "BP": np.arange(N_SNP, dtype=np.int64) * 1000 + 5,
        "MAF": RNG.uniform(0.05, 0.5, N_SNP),
        "A1": _a1,
        "A2": _a2,
    }
)
HM3 = REF.select("SNP", "A1", "A2")
BASE = pl.DataFrame(
    {
        "SNP": REF["SNP"],
        "CHR": REF["CHR"],
        "BP": REF["BP"],
        "A1": REF["A1"],
        "A2": REF["A2"],
        "MAF": REF["MAF"],
        "INFO": np.full(N_SNP, 0.99),
        "BETA": RNG.normal(0, 0.02, N_SNP),
        "SE": RNG.uniform(0.01, 0.02, N_SNP),
        "P": RNG.uniform(1e-6, 1, N_SNP),
        "N": np.full(N_SNP, 50_000.0),
    }
)

HOSTILE_NUM = [0.0, -1.0, 1.5, float("nan"), float("inf"), -float("inf"), 1e308, 5e-324, 1e-310, -0.0]
HOSTILE_TXT = ["NA", "", "abc", "1,5", "--", "nan", "Inf", "1e999", " "]
HOSTILE_ALLELE = ["a", "c", "g", "t", "AT", "N", "0", "-", "", "I", "D", "NA"]


@st.composite
def damaged_tables(draw):
    df = BASE.clone()
    kinds = draw(
        st.lists(
            st.sampled_from(["num", "txt", "allele", "dup", "swap_ambig", "drop_col", "case", "rename"]),
            min_size=1,
            max_size=3,
        )
    )
    txt_cols: dict[str, list] = {}
    for kind in kinds:
        rows = draw(st.lists(st.integers(0, N_SNP - 1), min_size=1, max_size=5, unique=True))
        if kind == "num":
            col = draw(st.sampled_from(["BETA", "SE", "P", "N", "MAF", "INFO"]))
            v = draw(st.sampled_from(HOSTILE_NUM))
            if col not in df.columns:
                continue
            vals = df[col].to_list()
            for r in rows:
                vals[r] = v
            df = df.with_columns(pl.Series(col, vals, dtype=pl.Float64))
        elif kind == "txt":
            col = draw(st.sampled_from(["BETA", "SE", "P", "N", "MAF"]))
            txt_cols[col] = [(r, draw(st.sampled_from(HOSTILE_TXT))) for r in rows]
        elif kind == "allele":
            col = draw(st.sampled_from(["A1", "A2"]))
            if col not in df.columns:
                continue
            vals = df[col].to_list()
            for r in rows:
                vals[r] = draw(st.sampled_from(HOSTILE_ALLELE))
            df = df.with_columns(pl.Series(col, vals))
        elif kind == "dup":
            df = pl.concat([df, df[rows]])
        elif kind == "swap_ambig":  # strand-ambiguous A/T, C/G SNPs
            if not {"A1", "A2"} <= set(df.columns):
                continue
            a1 = df["A1"].to_list()
            a2 = df["A2"].to_list()
            for r in rows:
                a1[r], a2[r] = ("A", "T") if r % 2 else ("C", "G")
            df = df.with_columns(pl.Series("A1", a1), pl.Series("A2", a2))
        elif kind == "drop_col":
            df = df.drop(draw(st.sampled_from(["SNP", "A1", "A2", "P", "BETA", "SE", "N"])), strict=False)
        elif kind == "case":
            df = df.with_columns(pl.col(c).str.to_lowercase() for c in ("A1", "A2") if c in df.columns)
        elif kind == "rename":
            old = draw(st.sampled_from([c for c in df.columns]))
            new = draw(st.sampled_from(["snpid", "Beta", "pval", "x", "effect_allele", "OR"]))
            if new not in df.columns:  # a frame cannot hold two columns of one name
                df = df.rename({old: new})
    fmt = draw(st.sampled_from(["tab", "space", "comma", "gz", "parquet", "semicolon"]))
    return df, txt_cols, fmt


def write_table(df: pl.DataFrame, txt_cols: dict, fmt: str, path_stem: Path) -> Path:
    if fmt == "parquet" and not txt_cols:
        p = path_stem.with_suffix(".parquet")
        df.write_parquet(p)
        return p
    sep = {"tab": "\t", "space": " ", "comma": ",", "gz": "\t", "parquet": "\t", "semicolon": ";"}[fmt]
    out = df.with_columns(pl.col(c).cast(pl.String) for c in df.columns)
    for col, edits in txt_cols.items():
        if col in out.columns:
            vals = out[col].to_list()
            for r, v in edits:
                if r < len(vals):
                    vals[r] = v
            out = out.with_columns(pl.Series(col, vals, dtype=pl.String))
    lines = [sep.join(out.columns)] + [sep.join("NA" if v is None else str(v) for v in row) for row in out.iter_rows()]
    text = "\n".join(lines) + "\n"
    if fmt == "gz":
        p = path_stem.with_suffix(".txt.gz")
        p.write_bytes(gzip.compress(text.encode()))
    else:
        p = path_stem.with_suffix(".txt")
        p.write_text(text)
    return p


def check_munged(lf: pl.LazyFrame) -> None:
    df = lf.collect()
    assert df.height > 0
    z = df["Z"].to_numpy()
    assert np.isfinite(z).all(), "munge output holds non-finite Z"
    n = df["N"].to_numpy()
    assert (np.isfinite(n) & (n > 0)).all(), "munge output holds a non-positive or non-finite N"
    assert set(df["A1"].to_list()) <= set(BASES) and set(df["A2"].to_list()) <= set(BASES)
    assert df["SNP"].is_in(HM3["SNP"].implode()).all()


@given(damaged_tables())
@SETTINGS
def test_scan_sumstats_hostile(case):
    df, txt, fmt = case
    with tempfile.TemporaryDirectory() as d:
        path = write_table(df, txt, fmt, Path(d) / "gwas")
        res, err = attempt(lambda: scan_sumstats(path).collect())
        if res is not None:
            assert "SNP" in res.columns
            for c in ("P", "SE", "BETA", "N"):
                if c in res.columns:
                    assert res[c].dtype.is_numeric(), f"{c} must be numeric, got {res[c].dtype}"


@given(damaged_tables())
@SETTINGS
def test_munge_hostile(case):
    from polgen.gsem import munge

    df, txt, fmt = case
    with tempfile.TemporaryDirectory() as d:
        path = write_table(df, txt, fmt, Path(d) / "gwas")
        out = Path(d) / "munged"
        res, err = attempt(munge, [str(path)], HM3, trait_names=["T1"], out=out)
        if err is None:
            munged, summary = res
            check_munged(munged["T1"])
            assert {"trait", "reason", "n_dropped"} <= set(summary.columns)
            # P outside (0, 1] must never be silently used
            if "P" in df.columns and "P" not in txt:
                p = df["P"].to_numpy()
                assert not ((p <= 0) | (p > 1)).any(), "munge accepted P outside (0, 1]"
        else:
            assert not (out / "T1.sumstats.parquet").exists() or err is None
        if out.exists():
            assert not stray(out)


def check_sumstats(df: pl.DataFrame) -> None:
    for t in ("T1",):
        b = df[f"beta.{t}"].to_numpy()
        s = df[f"se.{t}"].to_numpy()
        assert np.isfinite(b).all(), "sumstats output holds a non-finite beta"
        assert (np.isfinite(s) & (s > 0)).all(), "sumstats output holds a non-positive / non-finite SE"
    assert df["SNP"].is_unique().all()


@given(damaged_tables(), st.sampled_from(["logit", "OLS", "linprob"]))
@SETTINGS
def test_sumstats_hostile(case, mode):
    from polgen.gsem import sumstats

    df, txt, fmt = case
    with tempfile.TemporaryDirectory() as d:
        path = write_table(df, txt, fmt, Path(d) / "gwas")
        out = Path(d) / "o" / "ss.parquet"
        res, err = attempt(
            sumstats,
            [str(path)],
            REF,
            trait_names=["T1"],
            se_logit=mode == "logit",
            OLS=mode == "OLS",
            linprob=mode == "linprob",
            out=out,
        )
        if err is None:
            check_sumstats(res.collect())
        else:
            assert not out.exists()
        if out.parent.exists():
            assert not stray(out.parent)


# -- the GWAS functions: hostile rows must be flagged per SNP, never reported as converged fits -------
HOSTILE_GWAS = [0.0, float("nan"), float("inf"), -float("inf"), -1e-320, -0.5, 1.5, 1e-300]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 29), st.sampled_from(["beta.A", "se.B", "se.C", "MAF"]), st.sampled_from(HOSTILE_GWAS)
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["user", "commonfactor"]),
)
@settings(max_examples=25, deadline=None, derandomize=True)
def test_gwas_hostile_rows(edits, kind):
    from polgen.gsem import commonfactor_gwas, user_gwas

    df, cov = gsem_inputs(30, seed=11)
    bad = set()
    for r, col, v in edits:
        vals = df[col].to_list()
        vals[r] = v
        df = df.with_columns(pl.Series(col, vals, dtype=pl.Float64))
        # a zero / negative / non-finite SE or MAF, or a non-finite beta, makes the SNP unusable
        if not math.isfinite(v) or (col != "beta.A" and v <= 0) or (col == "MAF" and v >= 1):
            bad.add(r)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "gwas"
        if kind == "user":
            res, err = attempt(user_gwas, df, cov, USER_MODEL, out=out, batch_size=10)
        else:
            res, err = attempt(commonfactor_gwas, df, cov, out=out, batch_size=10)
        if err is not None:
            return
        res = res.collect()
        assert res.height == 30
        assert not stray(out)
        ok = res["converged"].to_numpy() & (res["warning"].fill_null("") == "").to_numpy()
        est = res["est"].to_numpy()
        se = res["se"].to_numpy()
        for r in range(30):
            if r in bad:
                assert not ok[r], f"SNP row {r} with a hostile value is reported as a clean fit: {edits}"
            if ok[r]:
                assert np.isfinite(est[r]) and np.isfinite(se[r]) and se[r] > 0


def test_gwas_huge_se_is_flagged():
    from polgen.gsem import user_gwas

    df, cov = gsem_inputs(30, seed=11)
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(1e300).otherwise(pl.col("se.B")).alias("se.B"))
    res = user_gwas(df, cov, USER_MODEL)
    row = res.row(0, named=True)
    assert (not row["converged"]) or row["warning"] or math.isfinite(row["se"])
    assert not (row["converged"] and not math.isfinite(row["se"]))
    assert res["converged"].sum() >= res.height - 1


# -- scan_ldscores --------------------------------------------------------------------------------
@given(st.sampled_from(["empty", "header_only", "bad_number", "no_l2", "missing_M", "bad_M", "nan", "dup"]))
@settings(max_examples=16, deadline=None, derandomize=True)
def test_scan_ldscores_hostile(kind):
    from polgen.io.ldscores import read_m, scan_ldscores

    with tempfile.TemporaryDirectory() as d:
        ld = Path(d) / "ld"
        ld.mkdir()
        rows = ["CHR\tSNP\tBP\tL2"] + [f"1\trs{i}\t{i * 100}\t{1.5 + i / 10}" for i in range(20)]
        m_text = "1000\n"
        if kind == "empty":
            rows = []
        elif kind == "header_only":
            rows = rows[:1]
        elif kind == "bad_number":
            rows[5] = "1\trs4\t400\tabc"
        elif kind == "no_l2":
            rows = [r.rsplit("\t", 1)[0] for r in rows]
        elif kind == "bad_M":
            m_text = "many\n"
        elif kind == "nan":
            rows[3] = "1\trs2\t200\tnan"
        elif kind == "dup":
            rows.append(rows[1])
        (ld / "1.l2.ldscore.gz").write_bytes(gzip.compress(("\n".join(rows) + ("\n" if rows else "")).encode()))
        if kind != "missing_M":
            (ld / "1.l2.M_5_50").write_text(m_text)
        res, err = attempt(lambda: scan_ldscores(str(ld) + "/").collect())
        if err is None and kind != "header_only":
            assert res.height > 0
        if err is None and "L2" in res.columns:
            # "nan" text is read as missing (null, visible to every consumer), never as a number
            assert np.isfinite(res["L2"].drop_nulls().to_numpy()).all(), "non-finite LD score accepted"
        res, err = attempt(read_m, str(ld) + "/")
        if err is None:
            assert np.isfinite(np.asarray(res, dtype=float)).all()


# -- hostile covstruc / model / frame shapes for the GWAS functions -----------------------------------
@given(
    st.sampled_from(
        [
            "S_nan",
            "S_inf",
            "S_notpd",
            "S_shape",
            "V_nan",
            "V_shape",
            "V_negdiag",
            "I_nan",
            "traits_mismatch",
            "traits_missing",
            "model_unknown_trait",
            "model_empty",
            "model_no_snp",
            "model_syntax",
            "drop_se_col",
            "se_text",
            "empty_frame",
            "none",
        ]
    ),
    st.sampled_from(["user", "commonfactor"]),
)
@settings(max_examples=36, deadline=None, derandomize=True)
def test_gwas_hostile_covstruc_and_model(kind, fn):
    from polgen.gsem import commonfactor_gwas, user_gwas

    df, cov = gsem_inputs(12, seed=3)
    model = USER_MODEL
    S, V, I = np.array(cov["S"]), np.array(cov["V"]), np.array(cov["I"])
    if kind == "S_nan":
        S[0, 1] = S[1, 0] = np.nan
    elif kind == "S_inf":
        S[2, 2] = np.inf
    elif kind == "S_notpd":
        S = np.array([[0.3, 0.9, 0.0], [0.9, 0.2, 0.0], [0.0, 0.0, 0.4]])
    elif kind == "S_shape":
        S = S[:2, :2]
    elif kind == "V_nan":
        V[3, 3] = np.nan
    elif kind == "V_shape":
        V = V[:5, :5]
    elif kind == "V_negdiag":
        V[0, 0] = -1e-4
    elif kind == "I_nan":
        I[1, 1] = np.nan
    elif kind == "traits_mismatch":
        cov["trait_names"] = ["A", "B", "D"]
    elif kind == "traits_missing":
        cov.pop("trait_names")
    elif kind == "model_unknown_trait":
        model = "F1 =~ A + B + Z\nF1 ~ SNP"
    elif kind == "model_empty":
        model = ""
    elif kind == "model_no_snp":
        model = "F1 =~ A + B + C"
    elif kind == "model_syntax":
        model = "F1 =~~ A + (B\nF1 ~ SNP"
    elif kind == "drop_se_col":
        df = df.drop("se.B")
    elif kind == "se_text":
        df = df.with_columns(pl.col("se.B").cast(pl.String))
    elif kind == "empty_frame":
        df = df.head(0)
    cov.update(S=S.tolist(), V=V.tolist(), I=I.tolist())
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "gwas"
        if fn == "user":
            res, err = attempt(user_gwas, df, cov, model, out=out)
        else:
            res, err = attempt(commonfactor_gwas, df, cov, out=out)
        if out.exists():
            assert not stray(out)
        if err is not None:
            return
        res = res.collect()
        ok = res["converged"].to_numpy() & (res["warning"].fill_null("") == "").to_numpy()
        # (traits_mismatch: documented R behaviour — beta.*/se.* taken by position, with a warning)
        model_kind = kind.startswith("model_")  # commonfactor_gwas takes no model: a valid call
        if kind in ("S_nan", "S_inf", "S_shape", "V_nan", "V_shape", "I_nan", "drop_se_col") or (
            model_kind and fn == "user" and kind != "model_no_snp"
        ):
            raise AssertionError(f"{kind!r} accepted by {fn}_gwas")
        if kind == "model_no_snp" and fn == "user":
            raise AssertionError("a model without a SNP effect accepted by user_gwas")
        if kind == "empty_frame":
            assert res.height == 0
        else:
            est = res["est"].to_numpy()
            se = res["se"].to_numpy()
            assert (~ok | (np.isfinite(est) & np.isfinite(se) & (se > 0))).all(), (
                f"{kind!r}: a clean fit with a non-finite estimate / SE"
            )
