"""Parity with R GenomicSEM itself: its munge(), sumstats() and ldsc() R sources are run by Rscript
on messy synthetic inputs and compared with polgen's.

GenomicSEM's R dependencies (readr, gdata, stringr, data.table, dplyr, R.utils) are not installed
here, so the few functions its code calls are replaced by small base-R stand-ins below (our own
code).  The R sources are read at run time from ``$POLGEN_GENOMICSEM_R`` (a checkout's ``R/``
directory) or from a local git mirror of GenomicSEM/GenomicSEM; without either (or without
Rscript) the tests skip.
"""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import genomicsem_r_sources

from polgen.gsem.ldsc import ldsc
from polgen.gsem.munge import munge
from polgen.gsem.sumstats import sumstats
from test_gsem_ldsc import simulate

_FILES = ("utils.R", "utils_sanitychecks.R", "ldsc.R", "munge.R", "munge_main.R", "sumstats.R",
          "sumstats_main.R")

SHIMS = r"""
.open <- function(f) if (grepl("\\.gz$", f)) gzfile(f) else f
.cls <- c(SNP = "character", A1 = "character", A2 = "character")
read_delim <- function(file, delim = "\t", ...)
  read.delim(.open(file), sep = delim, stringsAsFactors = FALSE, check.names = FALSE, colClasses = .cls)
read_csv <- function(file, col_names = FALSE, ...) read.csv(file, header = col_names)
fread <- function(f, header = TRUE, data.table = FALSE, ...)
  read.delim(.open(f), stringsAsFactors = FALSE, check.names = FALSE, colClasses = .cls)
lowerTriangle <- function(x, diag = FALSE) x[lower.tri(x, diag = diag)]
str_detect <- function(s, p) grepl(p, s)
str_replace_all <- function(s, p, r) gsub(p, r, s, fixed = TRUE)
fixed <- function(x) x
str_remove_all <- function(s, p) gsub(p, "", s)
gzip <- function(f, overwrite = TRUE) {
  x <- readLines(f); con <- gzfile(paste0(f, ".gz"), "w"); writeLines(x, con); close(con); file.remove(f)
}
inner_join <- function(x, y, by) merge(x, y, by = by, sort = FALSE)
.src <- function(dir) for (f in c(%s))
  eval(parse(text = gsub("gdata::", "", readLines(file.path(dir, f)), fixed = TRUE)), envir = globalenv())
.num <- function(df) { df[] <- lapply(df, function(x) if (is.numeric(x)) format(x, digits = 17) else x); df }
""" % ", ".join(f'"{f}"' for f in _FILES)


@pytest.fixture(scope="module")
def rsrc(tmp_path_factory):
    return genomicsem_r_sources(tmp_path_factory.mktemp("gsem_r"), _FILES, ())


def _rscript(code: str, cwd: Path) -> str:
    out = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Three raw GWAS files with R-relevant mess: NA P/effects, lower-case and non-ACGT alleles,
    P = 1, duplicated ids, an odds-ratio file, INFO values either side of the filters."""
    d = tmp_path_factory.mktemp("gsem_rparity")
    sim = simulate(d, n=6000, chroms=2, seed=3)
    rng = np.random.default_rng(9)
    hm3 = pl.read_csv(sim["hm3"], separator="\t")
    ref = hm3.with_columns(CHR=pl.lit(1), BP=pl.int_range(pl.len()) + 1,
                           MAF=pl.Series(rng.uniform(0.003, 0.5, hm3.height).round(4)))
    ref.select("SNP", "CHR", "BP", "MAF", "A1", "A2").write_csv(d / "ref.txt", separator="\t")
    files = []
    for i, f in enumerate(sim["files"]):
        df = pl.read_csv(f, separator="\t", infer_schema_length=0)
        n = df.height
        idx = rng.permutation(n)
        cols = {c: df[c].to_list() for c in ("SNP", "A1", "A2", "BETA", "P")}
        for j in idx[:20]:
            cols["P"][j] = "NA"
        for j in idx[20:40]:
            cols["BETA"][j] = "NA"
        for j in idx[40:60]:
            cols["A1"][j] = cols["A1"][j].lower()
        for j in idx[60:70]:
            cols["A2"][j] = "N"
        for j in idx[70:80]:
            cols["P"][j] = "1"
        for j in idx[80:90]:
            cols["SNP"][j] = cols["SNP"][idx[90]]
        df = df.with_columns(INFO=pl.Series(rng.uniform(0.8, 1.0, n).round(3).astype(str)),
                             **{c: pl.Series(v) for c, v in cols.items()})
        if i == 2:
            df = df.with_columns(OR=pl.col("BETA").cast(pl.Float64, strict=False).exp().cast(pl.String)).drop("BETA")
        out = d / f"raw{i}.txt"
        df.write_csv(out, separator="\t", null_value="NA")
        files.append(out)
    return dict(d=d, files=files, hm3=sim["hm3"], ref=d / "ref.txt", ld=sim["ld"])


def test_munge_and_sumstats_match_r_genomicsem(rsrc, raw):
    d, names = raw["d"], ["A", "B", "C"]
    se_logit, ols, linprob = [False, False, True], [True, False, False], [False, True, False]
    files = ", ".join(f'"{f}"' for f in raw["files"])
    tf = lambda xs: "c(" + ", ".join("TRUE" if x else "FALSE" for x in xs) + ")"  # noqa: E731
    _rscript(SHIMS + f'.src("{rsrc}")\n'
             f'munge(c({files}), "{raw["hm3"]}", trait.names = c("A", "B", "C"))\n'
             f'res <- sumstats(c({files}), "{raw["ref"]}", trait.names = c("A", "B", "C"), '
             f'se.logit = {tf(se_logit)}, OLS = {tf(ols)}, linprob = {tf(linprob)})\n'
             f'write.table(.num(res), "sumstats_R.tsv", sep = "\\t", quote = FALSE, row.names = FALSE)\n', d)
    ours, _ = munge(raw["files"], raw["hm3"], trait_names=names)
    for t in names:
        R = pl.read_csv(d / f"{t}.sumstats.gz", separator="\t").sort(["SNP", "Z"])
        O = ours[t].collect().sort(["SNP", "Z"])
        assert R["SNP"].to_list() == O["SNP"].to_list(), t  # same rows, duplicates included
        assert R["A1"].to_list() == O["A1"].to_list() and R["A2"].to_list() == O["A2"].to_list()
        np.testing.assert_allclose(O["N"].to_numpy(), R["N"].to_numpy())
        # R writes 15 significant digits and its qchisq(P, 1, lower = FALSE) is off by up to
        # ~5e-10 relative near P ~ 1e-14 (polgen's Z agrees with 50-digit mpmath there)
        np.testing.assert_allclose(O["Z"].to_numpy(), R["Z"].to_numpy(), rtol=1e-9, atol=1e-12)
    Rs = pl.read_csv(d / "sumstats_R.tsv", separator="\t", infer_schema_length=0)
    Os = sumstats(raw["files"], raw["ref"], trait_names=names, se_logit=se_logit, OLS=ols,
                  linprob=linprob).collect()
    assert Rs["SNP"].to_list() == Os["SNP"].to_list()  # same SNPs in the reference's order
    for c in Os.columns[6:]:
        np.testing.assert_allclose(Os[c].to_numpy(), Rs[c].str.strip_chars().cast(pl.Float64).to_numpy(),
                                   rtol=1e-9, err_msg=c)


@pytest.mark.parametrize("nb,prev", [(40, False), (200, True)])
def test_ldsc_matches_r_genomicsem(rsrc, raw, nb, prev):
    d = raw["d"]
    munged, _ = munge(raw["files"], raw["hm3"], trait_names=["A", "B", "C"])
    rng = np.random.default_rng(nb)
    files = []
    for t, lf in munged.items():  # shuffled rows, per-SNP N, chi^2 outliers
        df = lf.collect().sample(fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 30)))
        if t == "B":
            df = df.with_columns(N=pl.Series(rng.uniform(30_000, 50_000, df.height).round()),
                                 Z=pl.when(pl.int_range(pl.len()) < 15).then(pl.col("Z") * 9).otherwise(pl.col("Z")))
        f = d / f"{t}.{nb}.sumstats.gz"
        with gzip.open(f, "wb") as fh:
            fh.write(df.write_csv(separator="\t", float_precision=None).encode())
        files.append(f)
    sp = [0.5, None, 0.3] if prev else [None] * 3
    pp = [0.1, None, 0.02] if prev else [None] * 3
    rv = lambda xs: "c(" + ", ".join("NA" if x is None else repr(x) for x in xs) + ")"  # noqa: E731
    out = _rscript(SHIMS + f'.src("{rsrc}")\n'
                   f'res <- ldsc(c({", ".join(chr(34) + str(f) + chr(34) for f in files)}), {rv(sp)}, {rv(pp)}, '
                   f'"{raw["ld"]}/", "{raw["ld"]}/", n.blocks = {nb}, chr = 2, stand = TRUE)\n'
                   'for (k in c("S", "V", "I", "N", "S_Stand", "V_Stand")) '
                   'cat("@@", k, format(as.vector(res[[k]]), digits = 17), "\\n")\n', d)
    R = {ln.split()[1]: np.array([float(x) for x in ln.split()[2:]]) for ln in out.splitlines()
         if ln.startswith("@@")}
    res = ldsc(files, raw["ld"], chr=2, n_blocks=nb, sample_prev=sp, population_prev=pp, stand=True)
    for k, ours in [("S", res.S), ("V", res.V), ("I", res.I), ("S_Stand", res.S_Stand), ("V_Stand", res.V_Stand)]:
        np.testing.assert_allclose(ours.reshape(-1, order="F"), R[k], rtol=1e-10, atol=1e-18, err_msg=k)
    np.testing.assert_allclose(res.N, R["N"], rtol=1e-14)
