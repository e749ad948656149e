"""polgen export (issue 16): tsv.gz of any result, GWAS-SSF (+ metadata YAML) and LDSC .sumstats.gz
of a Genomic SEM GWAS with the effective N of the factor as GenomicSEM's tutorial computes it."""

from __future__ import annotations

import gzip
import hashlib
import io

import numpy as np
import polars as pl
import pytest

from polgen import cli
from polgen.errors import InputError, OutputExistsError, SchemaError
from polgen.export import SSF_COLUMNS, effective_n, export


@pytest.fixture
def gwas(tmp_path):
    """A user_gwas-like run folder: two parameters per SNP, one SNP failed."""
    rng = np.random.default_rng(7)
    n = 40
    maf = rng.uniform(0.02, 0.5, n)
    se = rng.uniform(0.005, 0.02, n)
    est = rng.normal(0, 0.01, n)
    base = pl.DataFrame(
        {
            "SNP": [f"rs{i}" for i in range(n - 1)] + ["2:500_A_G"],
            "CHR": ["1"] * 10 + ["chr2"] * 10 + ["X"] * 10 + ["22"] * 10,
            "BP": np.arange(1, n + 1) * 1000,
            "MAF": maf,
            "A1": ["A"] * n,
            "A2": ["G"] * n,
        }
    )
    log10p = rng.uniform(0, 5, n)
    log10p[3] = 400.25  # below the double range
    f1 = base.with_columns(
        lhs=pl.lit("F1"),
        op=pl.lit("~"),
        rhs=pl.lit("SNP"),
        est=est,
        se=se,
        z=est / se,
        p=10.0**-log10p,
        log10p=log10p,
        converged=pl.Series([True] * (n - 1) + [False]),
        warning=pl.lit(""),
    )
    f1 = f1.with_columns(est=pl.when(pl.col("converged")).then(pl.col("est")).otherwise(float("nan")))
    f2 = f1.with_columns(lhs=pl.lit("F2"), est=pl.col("est") * 2)
    folder = tmp_path / "gwas"
    folder.mkdir()
    pl.concat([f1, f2]).write_parquet(folder / "part-00000.parquet")
    return folder, f1


def _read_gz_tsv(path) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(gzip.decompress(path.read_bytes())), separator="\t", infer_schema=False)


def test_effective_n_follows_the_genomicsem_tutorial(gwas):
    _, f1 = gwas
    ok = f1.filter(pl.col("converged"))
    sel = ok.filter((pl.col("MAF") >= 0.1) & (pl.col("MAF") <= 0.4))
    want = np.mean(1.0 / (2 * sel["MAF"].to_numpy() * (1 - sel["MAF"].to_numpy()) * sel["se"].to_numpy() ** 2))
    assert effective_n(ok.lazy()) == pytest.approx(want, rel=1e-12)


def test_ssf_export_and_metadata(gwas, tmp_path, capsys):
    folder, f1 = gwas
    out = tmp_path / "F1.tsv.gz"
    argv = ["export", str(folder), "--format", "ssf", "--lhs", "F1", "--out", str(out), "--genome-assembly", "GRCh38"]
    assert cli.main(argv) == 0
    assert "wrote 39 rows of F1 ~ SNP" in capsys.readouterr().out
    df = _read_gz_tsv(out)
    assert tuple(df.columns) == SSF_COLUMNS
    ok = f1.filter(pl.col("converged"))
    assert df.height == 39 and df["effect_allele"].to_list() == ok["A1"].to_list()
    assert df["chromosome"].to_list()[:30:10] == ["1", "2", "23"]
    np.testing.assert_allclose(df["beta"].cast(pl.Float64).to_numpy(), ok["est"].to_numpy(), rtol=1e-15)
    assert df["p_value"][3] == "5.62341e-401"  # 10^-400.25, exact below the double range
    np.testing.assert_allclose(df["p_value"].cast(pl.Float64).to_numpy()[4:], ok["p"].to_numpy()[4:], rtol=1e-5)
    assert set(df["effect_allele_frequency"].to_list()) == {"NA"}
    n_hat = effective_n(ok.lazy())
    assert set(df["n"].to_list()) == {str(round(n_hat))}
    meta = (tmp_path / "F1.tsv.gz-meta.yaml").read_text()
    assert 'file_type: "GWAS-SSF v1.0"' in meta and 'genome_assembly: "GRCh38"' in meta
    assert f'data_file_md5sum: "{hashlib.md5(out.read_bytes()).hexdigest()}"' in meta
    assert f"sample_size: {round(n_hat)}" in meta and "1 SNPs without a finite estimate" in meta
    # an existing output is refused, --overwrite replaces it
    assert cli.main(argv) == 2 and "exists" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite", "--n", "50000"]) == 0
    assert set(_read_gz_tsv(out)["n"].to_list()) == {"50000"}


def test_ldsc_export(gwas, tmp_path):
    folder, f1 = gwas
    out = tmp_path / "F2.sumstats.gz"
    info = export(folder, out, "ldsc", param="F2~SNP")
    assert info["parameter"] == "F2 ~ SNP" and info["rows"] == 39
    df = _read_gz_tsv(out)
    assert df.columns == ["SNP", "A1", "A2", "Z", "N"]
    ok = f1.filter(pl.col("converged"))
    np.testing.assert_allclose(df["Z"].cast(pl.Float64).to_numpy(), 2 * ok["z"].to_numpy(), rtol=1e-12)


def test_tsv_gz_of_any_result(tmp_path):
    res = pl.DataFrame({"SNP": ["a", "b"], "P": [0.5, None], "BETA_temp": [1.5, -2.0]})
    res.write_parquet(tmp_path / "lfmm.parquet")
    out = tmp_path / "lfmm.tsv.gz"
    assert export(tmp_path / "lfmm.parquet", out)["rows"] == 2
    text = gzip.decompress(out.read_bytes()).decode()
    assert text.splitlines() == ["SNP\tP\tBETA_temp", "a\t0.5\t1.5", "b\tNA\t-2.0"]


def test_export_refusals(gwas, tmp_path):
    folder, _ = gwas
    with pytest.raises(InputError, match=r"parameters \['F1 ~ SNP', 'F2 ~ SNP'\]"):
        export(folder, tmp_path / "x.tsv", "ssf")
    with pytest.raises(InputError, match="ends with .tsv"):
        export(folder, tmp_path / "x.txt", "ssf", lhs="F1")
    other = tmp_path / "other.parquet"
    pl.DataFrame({"SNP": ["a"], "P": [0.1]}).write_parquet(other)
    with pytest.raises(SchemaError, match="not a per-SNP Genomic SEM GWAS result"):
        export(other, tmp_path / "o.sumstats.gz", "ldsc")
    (tmp_path / "exists.tsv").write_text("x")
    with pytest.raises(OutputExistsError):
        export(folder, tmp_path / "exists.tsv", "ssf", lhs="F1")
    with pytest.raises(InputError, match="results not found"):
        export(tmp_path / "missing", tmp_path / "m.tsv.gz")
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]
