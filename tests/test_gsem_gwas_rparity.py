"""user_gwas against R on synthetic data, run here by Rscript (skipped without Rscript, lavaan or
the GenomicSEM R sources).

* R GenomicSEM's own ``userGWAS`` (its R sources, read from ``$POLGEN_GENOMICSEM_R`` or the local
  git mirror, with base-R stand-ins for the few stringr/gdata helpers it calls) for
  ``fix_measurement=FALSE`` (one- and two-factor models, DWLS) and for defined (``:=``)
  parameters with ``fix_measurement=TRUE``;
* per-SNP lavaan calls (GenomicSEM's S_full / V_full construction from its ``utils.R``, then
  ``sem()`` with its options) for ML with ``fix_measurement=FALSE``: lavaan 0.6.14 (Debian) reuses
  the first SNP's fixed.x SNP variance in userGWAS's ``slotModel`` ML path and reports ML SEs that
  differ from the lavaan 0.6-2x fixtures (see ../shared/README.md), so estimates, chisq and df are
  compared there, not SEs.

The constraint cases (labels, ``==``, bounds, ``:=`` under ``fix_measurement=FALSE``) are in
tests/test_gsem_gwas_syntax.py, which uses the helpers here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import genomicsem_r_sources

from polgen.gsem.gwas import user_gwas

_FILES = ("utils.R", "utils_sanitychecks.R", "userGWAS.R", "userGWAS_main.R")

ONE = "F1 =~ T1 + T2 + T3 + T4 + T5\nF1 ~ SNP"
TWO = "F1 =~ T1 + T2 + T3\nF2 =~ T4 + T5\nF1 ~ SNP\nF2 ~ SNP"
# GenomicSEM's usual guard against negative residual variances, here binding at every SNP
BOUND_FM = TWO + "\nT5 ~~ a*T5\na > 0.06"
N_R = 12

_R_COMMON = r"""
suppressMessages({library(lavaan); library(Matrix)})
lowerTriangle <- function(x, diag = FALSE) x[lower.tri(x, diag = diag)]
str_detect <- function(s, p) grepl(p, s)
str_replace_all <- function(s, p, r) gsub(p, r, s, fixed = TRUE)
fixed <- function(x) x
args <- commandArgs(TRUE); src <- args[1]; d <- args[2]
for (f in c("utils.R", "utils_sanitychecks.R", "userGWAS.R", "userGWAS_main.R")) source(file.path(src, f))
S_LD <- as.matrix(read.csv(file.path(d, "S.csv"))); V_LD <- as.matrix(read.csv(file.path(d, "V.csv")))
I_LD <- as.matrix(read.csv(file.path(d, "I.csv")))
snps <- read.csv(file.path(d, "snps.csv"), colClasses = c(SNP = "character", CHR = "character",
                 A1 = "character", A2 = "character"))
cases <- read.delim(file.path(d, "cases.tsv"), header = FALSE, stringsAsFactors = FALSE,
                    col.names = c("case", "kind", "model", "est", "fm", "nsnp"))
"""

# R GenomicSEM userGWAS itself (serial path)
_R_USERGWAS = r"""
run_usergwas <- function(cs) {
  model <- gsub("\\n", "\n", cs$model, fixed = TRUE)
  capture.output(res <- userGWAS(covstruc = list(V_LD, S_LD, I_LD), SNPs = snps[seq_len(cs$nsnp), ],
                 model = model, estimation = cs$est, fix_measurement = cs$fm, parallel = FALSE))
  res <- do.call(rbind, res)
  data.frame(case = cs$case, SNP = res$SNP, lhs = res$lhs, op = res$op, rhs = res$rhs, est = res$est,
             se = suppressWarnings(as.numeric(res$SE)), chisq = res$chisq, df = res$chisq_df)
}
"""

# the equivalent per-SNP lavaan calls, with lavaan's constrained sandwich: active constraints
# (con.jac without its inactive rows) restrict the bread to their null space Z,
# bread = Z (Z' H Z)^-1 Z' (lavaan's augmented-information inverse), Omega = bread L' V L bread
_R_PERSNP = r"""
k <- ncol(S_LD); beta_SNP <- snps[, grep("beta.", colnames(snps), fixed = TRUE)]
SE_SNP <- snps[, grep("se.", colnames(snps), fixed = TRUE)]
varSNP <- 2 * snps$MAF * (1 - snps$MAF); I2 <- I_LD; diag(I2) <- ifelse(diag(I2) <= 1, 1, diag(I2))
coords <- which(I2 != 'NA', arr.ind = TRUE)
run_persnp <- function(cs) {
  model <- gsub("\\n", "\n", cs$model, fixed = TRUE); ml <- cs$est == "ML"
  ov <- lavNames(lavaanify(model), "ov"); out <- NULL
  for (i in seq_len(cs$nsnp)) {
    V_SNP <- .get_V_SNP(SE_SNP, I2, varSNP, "standard", coords, k, i)
    Vf <- .get_V_full(k, V_LD, (.0005)^2, V_SNP)
    if (eigen(Vf)$values[nrow(Vf)] <= 0) Vf <- as.matrix(nearPD(Vf, corr = FALSE)$mat)
    Sf <- .get_S_Full(k, S_LD, varSNP, beta_SNP, FALSE, i)
    if (eigen(Sf)$values[nrow(Sf)] <= 0) Sf <- as.matrix(nearPD(Sf, corr = FALSE)$mat)
    K <- ncol(Sf); pos <- matrix(0, K, K); pos[lower.tri(pos, diag = TRUE)] <- seq_len(K * (K + 1) / 2)
    pos[upper.tri(pos)] <- t(pos)[upper.tri(pos)]
    idx <- match(ov, colnames(Sf)); p <- length(ov); sel <- integer(0)
    for (b in 1:p) for (a in b:p) sel <- c(sel, pos[idx[a], idx[b]])
    Vr <- Vf[sel, sel]
    if (ml) {
      fit <- sem(model, sample.cov = Sf, estimator = "ML", sample.nobs = 200, optim.dx.tol = .01,
                 sample.cov.rescale = FALSE, se = "none")
    } else {
      fit <- sem(model, sample.cov = Sf, estimator = "DWLS", WLS.V = diag(1 / diag(Vr)),
                 sample.nobs = 2, optim.dx.tol = .01, se = "none")
    }
    pt <- parTable(fit); fr <- pt[pt$free > 0, ]
    se <- rep(NA_real_, nrow(fr))
    if (!ml) {
      D <- lavInspect(fit, "delta"); W <- lavInspect(fit, "WLS.V"); H <- t(D) %*% W %*% D
      cj <- fit@Model@con.jac
      if (nrow(cj) > 0) { ina <- attr(cj, "inactive.idx"); if (length(ina)) cj <- cj[-ina, , drop = FALSE] }
      if (nrow(cj) > 0) {
        Z <- MASS::Null(t(cj)); bread <- Z %*% solve(t(Z) %*% H %*% Z) %*% t(Z)
      } else bread <- solve(H)
      L <- W %*% D; Om <- bread %*% t(L) %*% Vr %*% L %*% bread
      se <- sqrt(pmax(diag(Om), 0)); se[diag(Om) < 1e-14] <- NA
    }
    res <- data.frame(case = cs$case, SNP = snps$SNP[i], lhs = fr$lhs, op = fr$op, rhs = fr$rhs,
                      est = fr$est, se = se)
    if (any(pt$op == ":=")) {
      dp <- pt[pt$op == ":=", ]; dse <- rep(NA_real_, nrow(dp))
      if (!ml) {
        J <- lav_func_jacobian_complex(func = fit@Model@def.function,
                                       x = lav_model_get_parameters(fit@Model, type = "free"))
        dse <- sqrt(pmax(diag(J %*% Om %*% t(J)), 0))
      }
      res <- rbind(res, data.frame(case = cs$case, SNP = snps$SNP[i], lhs = dp$lhs, op = ":=",
                                   rhs = dp$rhs, est = dp$est, se = dse))
    }
    imp <- fitted(fit)$cov[colnames(Sf), colnames(Sf)]
    eta <- (Sf - imp)[lower.tri(Sf, diag = TRUE)]
    res$chisq <- as.numeric(t(eta) %*% solve(Vf) %*% eta)
    res$df <- if (ml) NA else fit@test[[1]]$df
    out <- rbind(out, res)
  }
  out
}
"""

_R_MAIN = r"""
out <- NULL
for (ci in seq_len(nrow(cases))) {
  cs <- cases[ci, ]
  out <- rbind(out, if (cs$kind == "usergwas") run_usergwas(cs) else run_persnp(cs))
}
write.csv(out, file.path(d, "out.csv"), row.names = FALSE)
"""


def synthetic(k: int = 5, n: int = 20, seed: int = 1):
    """A two-factor covstruc (S, V PD, I with cross-trait intercepts) and n SNPs with effects
    through the factors plus noise."""
    rng = np.random.default_rng(seed)
    names = [f"T{i + 1}" for i in range(k)]
    lam = np.zeros((k, 2))
    h = k // 2 + 1
    lam[:h, 0] = rng.uniform(0.25, 0.45, h)
    lam[h:, 1] = rng.uniform(0.25, 0.45, k - h)
    phi = np.array([[1.0, 0.4], [0.4, 1.0]])
    S = lam @ phi @ lam.T + np.diag(rng.uniform(0.05, 0.15, k))
    kst = k * (k + 1) // 2
    A = rng.normal(size=(kst, kst)) * 0.002
    V = A @ A.T + np.diag(rng.uniform(2e-5, 6e-5, kst))
    I = np.eye(k) * 1.02 + 0.05 * (np.ones((k, k)) - np.eye(k))
    maf = rng.uniform(0.05, 0.5, n)
    se = rng.uniform(0.004, 0.01, (n, k))
    beta = rng.normal(size=(n, k)) * 0.012 + (lam @ rng.normal(size=(2, n)) * 0.02).T
    cols = {"SNP": [f"rs{i}" for i in range(n)], "CHR": ["1"] * n, "BP": list(range(1000, 1000 + n)),
            "MAF": maf, "A1": ["A"] * n, "A2": ["G"] * n}
    for j, t in enumerate(names):
        cols[f"beta.{t}"] = beta[:, j]
        cols[f"se.{t}"] = se[:, j]
    cov = {"S": S, "V": V, "I": I, "trait_names": names}
    return cov, pl.DataFrame(cols)


def r_sources(tmp_path_factory) -> Path:
    """Directory with GenomicSEM's R sources (skip when Rscript, lavaan or the sources are absent)."""
    return genomicsem_r_sources(tmp_path_factory.mktemp("gsem_r_src"), _FILES, ("lavaan", "MASS"))


def run_r(src: Path, work: Path, cov: dict, snps: pl.DataFrame, cases: list[tuple]) -> pl.DataFrame:
    """Run R on ``cases`` = [(case, kind 'usergwas'|'persnp', model, estimation, fix_measurement,
    n_snps)]; rows (case, SNP, lhs, op, rhs, est, se, chisq, df)."""
    work.mkdir(parents=True, exist_ok=True)
    names = cov["trait_names"]
    V = np.asarray(cov["V"])
    np.savetxt(work / "S.csv", cov["S"], delimiter=",", header=",".join(names), comments="", fmt="%.17g")
    np.savetxt(work / "V.csv", V, delimiter=",", header=",".join(f"V{i}" for i in range(V.shape[0])),
               comments="", fmt="%.17g")
    np.savetxt(work / "I.csv", cov["I"], delimiter=",", header=",".join(names), comments="", fmt="%.17g")
    snps.write_csv(work / "snps.csv", float_precision=17)
    with open(work / "cases.tsv", "w") as fh:
        for case, kind, model, est, fm, n in cases:
            fh.write(f"{case}\t{kind}\t{model.replace(chr(10), chr(92) + 'n')}\t{est}\t"
                     f"{'TRUE' if fm else 'FALSE'}\t{n}\n")
    script = work / "run.R"
    script.write_text(_R_COMMON + _R_USERGWAS + _R_PERSNP + _R_MAIN)
    res = subprocess.run(["Rscript", str(script), str(src), str(work)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return pl.read_csv(work / "out.csv", null_values="NA", infer_schema_length=100_000,
                       schema_overrides={"se": pl.Float64, "df": pl.Float64})


def compare(ref: pl.DataFrame, ours: pl.DataFrame, *, se: bool = True, df: bool = True,
            est_tol: float = 1e-5, se_tol: float = 1e-5, chi_tol: float = 1e-3) -> pl.DataFrame:
    """Join R rows to ours on (SNP, lhs, op, rhs) and assert est / se / chisq / df."""
    o = ours.select("SNP", "lhs", "op", "rhs", pl.col("est").alias("est_p"), pl.col("se").alias("se_p"),
                    pl.col("chisq").alias("chisq_p"), pl.col("chisq_df").alias("df_p"), "converged")
    ref = ref.filter(~pl.col("op").is_in(["==", "<", ">"]))
    j = ref.join(o, on=["SNP", "lhs", "op", "rhs"], how="left")
    assert j.height == ref.height and j["est_p"].null_count() == 0, "R rows missing in polgen's output"
    assert j["converged"].all()
    np.testing.assert_allclose(j["est_p"].to_numpy(), j["est"].to_numpy(), atol=est_tol, rtol=0)
    np.testing.assert_allclose(j["chisq_p"].to_numpy(), j["chisq"].to_numpy(), atol=chi_tol, rtol=0)
    if df:
        assert j["df_p"].to_list() == [int(x) for x in j["df"].to_list()]
    if se:
        r_se = j["se"].to_numpy()
        p_se = j["se_p"].to_numpy()
        fixed = np.isnan(r_se)          # fixed / held at a bound: NA in R, NaN here
        assert np.array_equal(fixed, np.isnan(p_se))
        np.testing.assert_allclose(p_se[~fixed], r_se[~fixed], atol=se_tol, rtol=0)
    return j


@pytest.fixture(scope="module")
def r_out(tmp_path_factory):
    src = r_sources(tmp_path_factory)
    cov, snps = synthetic()
    defined = (TWO.replace("F1 ~ SNP", "F1 ~ b1*SNP").replace("F2 ~ SNP", "F2 ~ b2*SNP")
               + "\nd := b1 - b2\nh := b1*b2")
    # R's userGWAS costs ~0.4 s of CPU per SNP here: 12 SNPs per model keep the file near 30 s
    cases = [("one_dwls", "usergwas", ONE, "DWLS", False, N_R),
             ("two_dwls", "usergwas", TWO, "DWLS", False, N_R),
             ("defined_fm", "usergwas", defined, "DWLS", True, 10),
             ("one_ml", "persnp", ONE, "ML", False, 8),
             ("two_ml", "persnp", TWO, "ML", False, 8)]
    ref = run_r(src, tmp_path_factory.mktemp("gsem_r_gwas"), cov, snps, cases)
    return cov, snps, {c[0]: (c[2], ref.filter(pl.col("case") == c[0])) for c in cases}


@pytest.mark.parametrize("case", ["one_dwls", "two_dwls"])
def test_free_measurement_dwls_matches_r_usergwas(r_out, case):
    """fix_measurement=FALSE: every parameter of the model is estimated per SNP; est, sandwich SE,
    chisq and df of every free and fixed row as R's userGWAS."""
    cov, snps, ref = r_out
    model, rows = ref[case]
    ours = user_gwas(snps.head(N_R), cov, model, fix_measurement=False, long=True)
    j = compare(rows, ours)
    assert j.filter(pl.col("rhs") == "SNP", pl.col("op") == "~").height == N_R * (1 + (case == "two_dwls"))
    # the default output is the SNP effects only, with the same numbers
    short = user_gwas(snps.head(N_R), cov, model, fix_measurement=False)
    assert short.height == N_R * (1 + (case == "two_dwls"))
    compare(rows.filter(pl.col("op") == "~", pl.col("rhs") == "SNP"), short)


@pytest.mark.parametrize("case", ["one_ml", "two_ml"])
def test_free_measurement_ml_matches_lavaan(r_out, case):
    """ML, fix_measurement=FALSE: per-SNP lavaan ML fits give the same estimates and chisq (SEs:
    see the module docstring)."""
    cov, snps, ref = r_out
    model, rows = ref[case]
    ours = user_gwas(snps.head(8), cov, model, estimation="ML", fix_measurement=False, long=True)
    compare(rows, ours, se=False, df=False)
    assert np.isfinite(ours.filter(pl.col("op") == "~")["se"].to_numpy()).all()


def test_defined_parameters_match_r_usergwas(r_out):
    """':=' parameters with fix_measurement=TRUE (R rbinds them into the fixed-measurement
    model): estimate and delta-method SE with the sandwich covariance, as R's userGWAS."""
    cov, snps, ref = r_out
    model, rows = ref["defined_fm"]
    snps = snps.head(10)
    ours = user_gwas(snps, cov, model, long=True)
    j = compare(rows, ours)
    d = j.filter(pl.col("op") == ":=")
    assert d.height == 20 and d["se"].is_not_null().all()
    short = user_gwas(snps, cov, model)
    assert short.filter(pl.col("op") == ":=").height == 20           # defined rows by default
    sub = user_gwas(snps, cov, model, sub=["h", "d := b1 - b2"])
    assert sub["lhs"].to_list() == ["h", "d"] * 10
    compare(rows.filter(pl.col("op") == ":="), sub)

