"""Named DuckDB queries: each checked against a Polars / numpy / scipy computation."""

from __future__ import annotations

import math
import os

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from scipy.stats import chi2

from polgen import sql
from polgen.engine import run_to_sink
from polgen.errors import InputError, OutputExistsError, SchemaError
from polgen.io.sink import read_metadata


def per_snp(n: int = 3000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    chrom = rng.integers(1, 6, n)
    p = rng.uniform(size=n) ** 3
    p[:5] = [0.0, 1e-300, 5e-8, 1.0, 4e-9]
    return pl.DataFrame(
        {
            "SNP": [f"rs{i}" for i in range(n)],
            "CHR": chrom,
            "BP": rng.integers(1, 50_000, n),
            "BETA": rng.standard_normal(n),
            "P": p,
        }
    )


def test_queries_are_listed_and_documented():
    names = sql.list_queries()
    assert set(names) >= {"merge_sumstats", "top_hits", "annotate_regions", "per_chrom_summary"}
    assert "_macros" not in names
    for name in names:
        q = sql.get_query(name)
        assert q.description and q.output
        for p in q.params.values():
            assert p.description, (name, p.name)
    assert sql.get_query("top_hits").params["p_max"].default == 5e-8
    assert sql.get_query("top_hits").params["source"].required


# -- top_hits ------------------------------------------------------------------------------------
def test_top_hits_matches_polars():
    df = per_snp()
    got = sql.run("top_hits", {"p_max": 1e-4, "limit": 0}, frames={"source": df})
    want = (
        df.filter(pl.col("P") <= 1e-4)
        .with_columns(LOG10P=-pl.col("P").log10())
        .sort(["LOG10P", "SNP"], descending=[True, False])
    )
    assert got["SNP"].to_list() == want["SNP"].to_list()
    assert got["SNP"][0] == "rs0" and math.isinf(got["LOG10P"][0])  # P = 0 first
    np.testing.assert_allclose(got["LOG10P"][1:].to_numpy(), want["LOG10P"][1:].to_numpy(), rtol=1e-12)
    assert got.columns == ["SNP", "CHR", "BP", "BETA", "P", "LOG10P"]
    limited = sql.run("top_hits", {"source": df, "p_max": 1e-4, "limit": 7})
    assert limited["SNP"].to_list() == want["SNP"].to_list()[:7]
    default = sql.run("top_hits", {"source": df})
    assert default["SNP"].to_list() == want.filter(pl.col("P") <= 5e-8)["SNP"].to_list()


def test_top_hits_on_log10p_and_bad_p_values():
    df = per_snp(500, seed=3)
    log_only = df.with_columns(LOG10P=-pl.col("P").log10()).drop("P")
    a = sql.run("top_hits", {"source": df, "p_max": 1e-3, "limit": 0})
    b = sql.run("top_hits", {"source": log_only, "p_max": 1e-3, "limit": 0})
    assert a["SNP"].to_list() == b["SNP"].to_list()
    np.testing.assert_allclose(b["P"].to_numpy()[1:], a["P"].to_numpy()[1:], rtol=1e-12)
    bad = pl.DataFrame({"SNP": ["nan", "neg", "big", "null", "ok"], "P": [float("nan"), -1e-9, 1.5, None, 1e-9]})
    assert sql.run("top_hits", {"source": bad, "p_max": 1.0})["SNP"].to_list() == ["ok"]


def test_top_hits_on_parquet_paths_globs_and_sink_dirs(tmp_path):
    df = per_snp(2000, seed=5)
    for k, part in enumerate(df.iter_slices(700)):
        part.write_parquet(tmp_path / f"res_{k}.parquet")
    want = sql.run("top_hits", {"source": df, "p_max": 1e-3, "limit": 0})
    by_glob = sql.run("top_hits", {"source": str(tmp_path / "res_*.parquet"), "p_max": 1e-3, "limit": 0})
    assert by_glob.equals(want)
    single = sql.run("top_hits", {"source": tmp_path / "res_0.parquet", "p_max": 1e-3, "limit": 0})
    assert set(single["SNP"]) == set(want["SNP"]) & set(df[:700]["SNP"])

    def chunk(i):
        return df.slice(i * 500, 500)

    sink = run_to_sink(chunk, list(range(4)), tmp_path / "sinkout", {"q": 1})
    by_dir = sql.run("top_hits", {"source": str(sink.path), "p_max": 1e-3, "limit": 0})
    assert by_dir.equals(want)


# -- per_chrom_summary ---------------------------------------------------------------------------
def _lambda(p: np.ndarray) -> float:
    return float(np.median(chi2.isf(p, 1)) / 0.4549364)


def test_per_chrom_summary_matches_numpy():
    df = per_snp(4000, seed=1)
    labels = {1: "chr1", 2: "2", 3: "chr3", 4: "X", 5: "chrX"}  # chr X spelled two ways
    df = df.with_columns(CHR=pl.col("CHR").replace_strict(labels, return_dtype=pl.String))
    df = df.with_columns(
        P=pl.when(pl.col("SNP") == "rs10")
        .then(float("nan"))
        .when(pl.col("SNP") == "rs11")
        .then(1.2)
        .otherwise(pl.col("P"))
    )
    got = sql.run("per_chrom_summary", {"source": df, "p_genomewide": 5e-8, "p_suggestive": 1e-3})
    assert got["CHR"].to_list() == ["chr1", "2", "chr3", "X", "all"]
    code = df["CHR"].replace_strict({"chr1": 1, "2": 2, "chr3": 3, "X": 23, "chrX": 23}).to_numpy()
    p = df["P"].to_numpy()
    valid = (p >= 0) & (p <= 1) & ~np.isnan(p)
    for row, sel in zip(
        got.iter_rows(named=True), [code == 1, code == 2, code == 3, code == 23, np.ones(len(p), bool)]
    ):
        pv = p[sel & valid]
        assert row["n_snps"] == sel.sum()
        assert row["n_invalid_p"] == (sel & ~valid).sum()
        assert row["min_p"] == pv.min()
        assert row["n_genomewide"] == (pv <= 5e-8).sum()
        assert row["n_suggestive"] == (pv <= 1e-3).sum()
        assert row["lambda_gc"] == pytest.approx(_lambda(pv), rel=1e-10)
        assert row["median_chisq"] == pytest.approx(np.median(chi2.isf(pv, 1)), rel=1e-10)
    assert got.filter(pl.col("CHR") == "all")["n_invalid_p"][0] == 2


def test_per_chrom_summary_null_lambda_and_z_fallback():
    rng = np.random.default_rng(9)
    z = rng.standard_normal(1001) * 1.1
    df = pl.DataFrame({"CHR": np.ones(1001, dtype=np.int64), "Z": z})  # no P at all: chisq = Z^2
    got = sql.run("per_chrom_summary", {"source": df})
    assert got["lambda_gc"][0] == pytest.approx(np.median(z**2) / 0.4549364, rel=1e-12)
    assert got["n_invalid_p"][0] == 1001 and got["min_p"][0] is None


# -- annotate_regions ----------------------------------------------------------------------------
def _brute_force(df: pl.DataFrame, regions: pl.DataFrame, zero_based: bool) -> set[tuple[str, str]]:
    code = {"chr1": 1, "1": 1, "2": 2, "chr2": 2, "3": 3, "4": 4, "5": 5, "X": 23}
    out = set()
    snp_code = np.array([code[str(c)] for c in df["CHR"]])
    bp = df["BP"].to_numpy()
    for r in regions.iter_rows(named=True):
        lo = r["start"] + (1 if zero_based else 0)
        hit = (snp_code == code[str(r["chrom"])]) & (bp >= lo) & (bp <= r["end"])
        out |= {(s, r["name"]) for s in df["SNP"].filter(pl.Series(hit))}
    return out


@pytest.mark.parametrize("zero_based", [False, True])
def test_annotate_regions_matches_brute_force(zero_based):
    df = per_snp(3000, seed=2)
    rng = np.random.default_rng(4)
    starts = rng.integers(1, 48_000, 60)
    regions = pl.DataFrame(
        {
            "chrom": rng.choice(["chr1", "2", "chr2", "3", "X"], 60),
            "start": starts,
            "end": starts + rng.integers(0, 3000, 60),
            "name": [f"g{i}" for i in range(60)],
        }
    )
    # exact boundaries: a SNP at start and one at end of a region
    first = df.row(0, named=True)
    regions = pl.concat(
        [
            regions,
            pl.DataFrame(
                {
                    "chrom": [str(first["CHR"])] * 2,
                    "start": [first["BP"], first["BP"] - 5],
                    "end": [first["BP"] + 5, first["BP"]],
                    "name": ["at_start", "at_end"],
                }
            ),
        ]
    )
    got = sql.run("annotate_regions", {"source": df, "regions": regions, "zero_based": zero_based})
    assert set(zip(got["SNP"], got["region"])) == _brute_force(df, regions, zero_based)
    assert len(got) == len(_brute_force(df, regions, zero_based))
    assert (("rs0", "at_start") in set(zip(got["SNP"], got["region"]))) == (not zero_based)
    assert ("rs0", "at_end") in set(zip(got["SNP"], got["region"]))
    # genome order
    order = got.with_columns(k=pl.col("CHR") * 10**9 + pl.col("BP"))["k"].to_numpy()
    assert (np.diff(order) >= 0).all()
    keep = sql.run(
        "annotate_regions", {"source": df, "regions": regions, "zero_based": zero_based, "keep_unmatched": "true"}
    )
    unmatched = set(df["SNP"]) - set(got["SNP"])
    assert len(keep) == len(got) + len(unmatched)
    assert set(keep.filter(pl.col("region").is_null())["SNP"]) == unmatched


# -- merge_sumstats ------------------------------------------------------------------------------
def _sumstats(seed: int, n: int = 400) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    alleles = rng.choice(["A", "C", "G", "T"], size=(n, 2))
    same = alleles[:, 0] == alleles[:, 1]
    alleles[same, 1] = np.where(alleles[same, 0] == "A", "G", "A")
    beta = rng.standard_normal(n) * 0.05
    se = rng.uniform(0.01, 0.05, n)
    return pl.DataFrame(
        {
            "SNP": [f"rs{i}" for i in range(n)],
            "CHR": rng.integers(1, 3, n),
            "BP": np.arange(n) * 100 + 1,
            "A1": alleles[:, 0],
            "A2": alleles[:, 1],
            "BETA": beta,
            "SE": se,
            "Z": beta / se,
            "P": rng.uniform(size=n),
            "A1FREQ": rng.uniform(0.05, 0.95, n),
        }
    )


def test_merge_sumstats_aligns_alleles(tmp_path):
    ref = _sumstats(0)
    other = _sumstats(1).with_columns(pl.col("SNP"), A1=ref["A1"], A2=ref["A2"])
    idx = np.arange(len(ref))
    swap = idx % 3 == 0
    other = other.with_columns(
        A1=pl.when(pl.Series(swap)).then(pl.col("A2")).otherwise(pl.col("A1")).str.to_lowercase(),
        A2=pl.when(pl.Series(swap)).then(pl.col("A1")).otherwise(pl.col("A2")),
    )
    # rs1: alleles match neither orientation; rs2: duplicated id in `other`; rs4 only in ref
    other = other.with_columns(A1=pl.when(pl.col("SNP") == "rs1").then(pl.lit("CCT")).otherwise(pl.col("A1")))
    other = pl.concat([other, other.filter(pl.col("SNP") == "rs2")]).filter(pl.col("SNP") != "rs4")
    third = other.drop("Z", "A1FREQ").with_columns(BETA=pl.col("BETA") * 2)
    ref.write_parquet(tmp_path / "trait_a.parquet")
    other.write_parquet(tmp_path / "trait_b.parquet")
    third.write_parquet(tmp_path / "trait_c.parquet")
    paths = [str(tmp_path / f"trait_{t}.parquet") for t in "abc"]
    got = sql.run("merge_sumstats", {"sumstats": paths})
    assert sorted(set(got["trait"])) == ["trait_a", "trait_b", "trait_c"]
    kept = set(ref["SNP"]) - {"rs1", "rs2", "rs4"}
    assert set(got["SNP"]) == kept
    assert len(got) == 3 * len(kept)
    assert got.columns == [
        "trait",
        "trait_idx",
        "SNP",
        "CHR",
        "BP",
        "A1",
        "A2",
        "BETA",
        "SE",
        "Z",
        "P",
        "N",
        "A1FREQ",
        "flipped",
    ]
    b = got.filter(pl.col("trait") == "trait_b").sort("SNP")
    o = other.unique("SNP", keep="first").filter(pl.col("SNP").is_in(list(kept))).sort("SNP")
    r = ref.filter(pl.col("SNP").is_in(list(kept))).sort("SNP")
    sign = np.where(o["A1"].str.to_uppercase().to_numpy() == r["A1"].to_numpy(), 1.0, -1.0)
    assert ((sign < 0) == b["flipped"].to_numpy()).all() and (sign < 0).sum() > 50
    np.testing.assert_allclose(b["BETA"].to_numpy(), sign * o["BETA"].to_numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(b["Z"].to_numpy(), sign * o["Z"].to_numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(
        b["A1FREQ"].to_numpy(), np.where(sign > 0, o["A1FREQ"].to_numpy(), 1 - o["A1FREQ"].to_numpy())
    )
    assert (b["A1"].to_numpy() == r["A1"].to_numpy()).all()  # reference alleles throughout
    np.testing.assert_array_equal(b["SE"].to_numpy(), o["SE"].to_numpy())
    c = got.filter(pl.col("trait") == "trait_c")
    assert c["Z"].is_null().all() and c["A1FREQ"].is_null().all()
    # genome order, traits in input order within a SNP
    assert got["trait_idx"].to_list()[:3] == [0, 1, 2]
    # not requiring every table keeps rs4 (reference + nothing else) and the duplicated rs2 rows
    loose = sql.run("merge_sumstats", {"sumstats": paths, "require_all": False})
    assert {"rs2", "rs4"} <= set(loose["SNP"]) and "rs1" in set(loose["SNP"])
    assert len(loose.filter(pl.col("SNP") == "rs1")) == 1  # only the reference row survives


def test_merge_sumstats_ambiguous_and_frames():
    a = pl.DataFrame({"SNP": ["s1", "s2", "s3"], "A1": ["A", "C", "A"], "A2": ["T", "G", "G"], "BETA": [0.1, 0.2, 0.3]})
    b = a.with_columns(A1=pl.Series(["T", "g", "G"]), A2=pl.Series(["A", "c", "A"]))
    got = sql.run("merge_sumstats", {"sumstats": ["x", "y"]}, frames={"x": a, "y": b})
    assert got.filter(pl.col("trait") == "y").sort("SNP")["BETA"].to_list() == [-0.1, -0.2, -0.3]
    strict = sql.run("merge_sumstats", {"sumstats": {"x": a, "y": b}, "drop_ambiguous": True})
    assert set(strict["SNP"]) == {"s3"}


# -- safety and errors ---------------------------------------------------------------------------
def test_parameters_are_validated(tmp_path):
    df = per_snp(50)
    with pytest.raises(InputError, match="no parameter 'nope'"):
        sql.run("top_hits", {"source": df, "nope": 1})
    with pytest.raises(InputError, match="needs parameter 'source'"):
        sql.run("top_hits", {})
    with pytest.raises(InputError, match="'p_max' must be double"):
        sql.run("top_hits", {"source": df, "p_max": "abc"})
    with pytest.raises(InputError, match="'limit' must be a non-negative integer"):
        sql.run("top_hits", {"source": df, "limit": 2.5})
    for neg in (-5, "-1"):
        with pytest.raises(InputError, match="'limit' must be a non-negative integer"):
            sql.run("top_hits", {"source": df, "limit": neg})
    with pytest.raises(InputError, match="'window_bp' must be a non-negative integer"):
        sql.run("loci", {"source": df, "window_bp": -1})
    with pytest.raises(InputError, match="no query named"):
        sql.run("drop_everything", {})
    with pytest.raises(InputError, match="not a query name"):
        sql.run("../etc/passwd", {})
    evil = "x.parquet'; COPY (SELECT 1) TO '/tmp/pwned.parquet'; --"
    with pytest.raises(InputError, match="file not found"):
        sql.run("top_hits", {"source": evil})
    with pytest.raises(InputError, match="no files match"):
        sql.run("top_hits", {"source": str(tmp_path / "*.parquet")})
    (tmp_path / "junk.parquet").write_text("not parquet at all")
    with pytest.raises(InputError, match="cannot read as parquet") as info:
        sql.run("top_hits", {"source": str(tmp_path / "junk.parquet")})
    assert "junk.parquet" in str(info.value)
    # a scalar holding SQL is only ever a bound value
    weird = pl.DataFrame({"SNP": ["a"], "CHR": ["1'; DROP TABLE x; --"], "P": [0.5]})
    assert sql.run("per_chrom_summary", {"source": weird})["n_snps"].to_list() == [1, 1]


def test_missing_columns_are_schema_errors():
    with pytest.raises(SchemaError, match="top_hits"):  # P as text
        sql.run("top_hits", {"source": pl.DataFrame({"SNP": ["a"], "P": ["0.1"]})})
    with pytest.raises(SchemaError, match="annotate_regions"):
        sql.run(
            "annotate_regions",
            {"source": pl.DataFrame({"CHR": [1], "BP": [5]}), "regions": pl.DataFrame({"chrom": ["1"], "start": [1]})},
        )


def test_out_writes_parquet_atomically(tmp_path):
    df = per_snp(800)
    out = tmp_path / "hits.parquet"
    lf = sql.run("top_hits", {"source": df, "p_max": 1e-3}, out=out)
    assert isinstance(lf, pl.LazyFrame)
    assert lf.collect().equals(sql.run("top_hits", {"source": df, "p_max": 1e-3}))
    md = read_metadata(out)
    assert md["polgen.query"] == "top_hits"
    assert '"p_max": 0.001' in md["polgen.params"]
    assert pq.ParquetFile(out).metadata.row_group(0).column(0).compression == "ZSTD"
    with pytest.raises(OutputExistsError):
        sql.run("top_hits", {"source": df}, out=out)
    before = out.read_bytes()
    with pytest.raises(SchemaError):
        sql.run("top_hits", {"source": pl.DataFrame({"P": ["x"]})}, out=out, overwrite=True)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["hits.parquet"]  # no temp file left behind
    sql.run("top_hits", {"source": df, "p_max": 1e-2}, out=out, overwrite=True)
    assert pl.read_parquet(out).height > pl.read_parquet(tmp_path / "hits.parquet").height - 1
    with pytest.raises(InputError, match="output directory does not exist"):
        sql.run("top_hits", {"source": df}, out=tmp_path / "no" / "such.parquet")


def test_query_files_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("POLGEN_SQL_DIR", str(tmp_path))
    (tmp_path / "good.sql").write_text(
        "-- polgen query: good\n-- Doubles x.\n-- param t relation   a table\n"
        "-- param k integer = 2  factor\n-- output: x * k\nSELECT x * $k AS y FROM {{t}} ORDER BY y\n"
    )
    assert sql.list_queries() == ["good"]
    assert sql.run("good", {"t": pl.DataFrame({"x": [1, 2]})})["y"].to_list() == [2, 4]
    assert sql.run("good", {"k": "3"}, frames={"t": pl.DataFrame({"x": [1]})})["y"].to_list() == [3]
    bad = {
        "noheader": "SELECT 1",
        "wrongname": "-- polgen query: other\nSELECT 1",
        "badkind": "-- polgen query: badkind\n-- param a float = 1  x\nSELECT $a",
        "badplace": "-- polgen query: badplace\n-- param a integer = 1  x\nSELECT * FROM {{a}}",
        "undeclared": "-- polgen query: undeclared\nSELECT $zzz",
        "baddefault": "-- polgen query: baddefault\n-- param a integer = x  x\nSELECT $a",
    }
    for name, text in bad.items():
        (tmp_path / f"{name}.sql").write_text(text)
        with pytest.raises(InputError):
            sql.get_query(name)


# -- loci ----------------------------------------------------------------------------------------
def _loci_reference(df: pl.DataFrame, p_max: float, window: int) -> list[tuple]:
    code = {"1": 1, "chr1": 1, "2": 2, "chr2": 2, "3": 3, "X": 23}
    hits = sorted(
        (code[str(c)], bp, snp, p)
        for snp, c, bp, p in df.select("SNP", "CHR", "BP", "P").iter_rows()
        if p is not None and 0 <= p <= p_max
    )
    loci: list[list] = []
    for k, (c, bp, snp, p) in enumerate(hits):
        if k == 0 or c != hits[k - 1][0] or bp - hits[k - 1][1] > window:
            loci.append([])
        loci[-1].append((c, bp, snp, p))
    out = []
    for i, members in enumerate(loci, start=1):
        lead = min(members, key=lambda m: (m[3], m[1], m[2]))
        out.append((i, members[0][1], members[-1][1], len(members), lead[2], lead[1], lead[3]))
    return out


@pytest.mark.parametrize("window", [0, 20_000, 150_000])
def test_loci_match_a_python_loop(window):
    rng = np.random.default_rng(11)
    n = 4000
    df = pl.DataFrame(
        {
            "SNP": [f"rs{i}" for i in range(n)],
            "CHR": rng.choice(["chr1", "2", "3", "X"], n),
            "BP": rng.integers(1, 3_000_000, n),
            "P": rng.uniform(size=n) ** 4,
        }
    )
    got = sql.run("loci", {"source": df, "p_max": 1e-5, "window_bp": window})
    want = _loci_reference(df, 1e-5, window)
    assert len(got) == len(want) > 3
    rows = got.select("locus", "start", "end", "n_hits", "lead_SNP", "lead_BP", "lead_P").rows()
    assert rows == want
    np.testing.assert_allclose(got["lead_LOG10P"].to_numpy(), -np.log10(got["lead_P"].to_numpy()), rtol=1e-12)
    assert got["n_hits"].sum() == df.filter(pl.col("P") <= 1e-5).height
    empty = sql.run("loci", {"source": df, "p_max": 0.0})
    assert empty.height == 0 and "lead_SNP" in empty.columns


def test_directory_sources_hive_and_hidden(tmp_path):
    df = per_snp(600, seed=8)
    for chrom in (1, 2, 3, 4, 5):
        d = tmp_path / "res" / f"CHR={chrom}"
        d.mkdir(parents=True)
        df.filter(pl.col("CHR") == chrom).drop("CHR").write_parquet(d / "data.parquet")
    (tmp_path / "res" / "_work").mkdir()
    df.write_parquet(tmp_path / "res" / "_work" / "scratch.parquet")  # ignored
    got = sql.run("per_chrom_summary", {"source": str(tmp_path / "res")})
    want = sql.run("per_chrom_summary", {"source": df})
    assert got["CHR"].to_list() == want["CHR"].to_list()
    assert got["n_snps"].to_list() == want["n_snps"].to_list()
    np.testing.assert_allclose(got["lambda_gc"].to_numpy(), want["lambda_gc"].to_numpy(), rtol=1e-12)
