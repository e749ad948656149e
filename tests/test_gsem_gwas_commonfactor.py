"""commonfactor_gwas: the reduced (variable-projection) DWLS fit against R GenomicSEM itself
(``.commonfactorGWAS_main`` run under Rscript with lavaan), against the general per-SNP kernel's
multi-start fit, and its speed-independent properties.

The SNPs below are synthetic (bench/gsem_gwas.py's generator, seed 1) on the PGC ANX/OCD/PTSD
covstruc of ../shared; rs774, rs785 and rs1190 are SNPs the earlier multi-start fit reported as
not converged although lavaan converges on them (their no-SNP fit is a Heywood case and the
per-SNP surface has a local minimum per sign pattern of the loadings).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
from conftest import genomicsem_r_sources

from polgen.gsem.gwas import commonfactor_gwas
from polgen.gsem.gwas_batch import extract_inputs, run_stage
from polgen.gsem.gwas_commonfactor import plan_commonfactor
from polgen.gsem.gwas_plan import resolve_columns
from polgen.kernels.gwas import ST_OK
from tests.conftest import require_shared


# SNP, MAF, betas (ANX, OCD, PTSD), SEs
SNPS = [
    ("rs0", 0.0634085384650584, (-0.02743830994122556, -0.10033241996717326, -0.019021706547073837), (0.030472864988010266, 0.04801854785303741, 0.01576638450878535)),
    ("rs1", 0.04837789746964792, (-0.003212097114215036, 0.027280013998788096, 0.021146057707666165), (0.04794597788548976, 0.022473258080419417, 0.02693305795890303)),
    ("rs2", 0.15907554192899517, (0.018680370990562932, 0.0051704327303414635, 0.010261901707242584), (0.04310810375281767, 0.026367965454766454, 0.03198374750692238)),
    ("rs3", 0.4246545222746452, (-0.010656108058811911, -0.10338865257134679, -0.059681933501996604), (0.011102364529722734, 0.040140524346992265, 0.03152573252877113)),
    ("rs4", 0.4213135707303099, (-0.014576537517814313, 0.028741100664836827, 0.040495465268276354), (0.023189268659963687, 0.04153714813713617, 0.0221277931716658)),
    ("rs774", 0.4607861817462758, (-0.02669511129300882, 0.01788338894119944, -0.011555729886409372), (0.04933535488805266, 0.03413421597063573, 0.03460697792133108)),
    ("rs785", 0.05544343137201351, (-0.006974747629226935, 0.0037864928286659534, -0.04685765069467197), (0.015231613675782834, 0.012977142079943632, 0.025818887542335245)),
    ("rs1190", 0.15415194135865717, (-0.03739503162875061, 0.011573130282322135, -0.07359551765181095), (0.04101057722336372, 0.03952518510884974, 0.049305016713854274)),
]

# Our own driver around GenomicSEM's per-SNP function: the variable order model and the base
# model from the first SNP as commonfactorGWAS sets them up, then each SNP in a tryCatch (R's own
# loop stops the whole run on the first SNP whose information matrix is singular).
R_DRIVER = r"""
args <- commandArgs(trailingOnly = TRUE)
src <- args[1]; inp <- args[2]; outp <- args[3]
suppressMessages({library(lavaan); library(Matrix)})
for (f in c("utils.R", "utils_sanitychecks.R", "commonfactorGWAS_main.R")) source(file.path(src, f))
k <- scan(file.path(inp, "k.txt"), quiet = TRUE)
S_LD <- matrix(scan(file.path(inp, "S.txt"), quiet = TRUE), k)
V_LD <- matrix(scan(file.path(inp, "V.txt"), quiet = TRUE), k * (k + 1) / 2)
I_LD <- matrix(scan(file.path(inp, "I.txt"), quiet = TRUE), k)
traits <- readLines(file.path(inp, "traits.txt"))
colnames(S_LD) <- traits
snps <- read.csv(file.path(inp, "snps.csv"), colClasses = c(SNP = "character"))
beta <- snps[, paste0("beta.", traits)]; se <- snps[, paste0("se.", traits)]
varSNP <- 2 * snps$MAF * (1 - snps$MAF)
varSNPSE2 <- 0.0005^2
toler <- .Machine$double.eps
diag(I_LD) <- ifelse(diag(I_LD) <= 1, 1, diag(I_LD))
coords <- which(I_LD != 'NA', arr.ind = TRUE)
model <- paste0("F1 =~ ", paste(traits, collapse = " + "), " \n F1 ~ SNP \n ",
                paste0(traits, " ~ 0*SNP", collapse = " \n "), " \n ")
Vs <- .get_V_SNP(se, I_LD, varSNP, "conserv", coords, k, 1)
Vf <- .get_V_full(k, V_LD, varSNPSE2, Vs)
Sf <- diag(k + 1); Sf[2:(k + 1), 2:(k + 1)] <- S_LD
Sf[, 1] <- c(varSNP[1], varSNP[1] * unlist(beta[1, ])); Sf[1, ] <- Sf[, 1]
colnames(Sf) <- rownames(Sf) <- c("SNP", traits)
if (eigen(Sf)$values[k + 1] <= 0) Sf <- as.matrix(nearPD(Sf, corr = FALSE)$mat)
ro <- .tryCatch.W.E(sem(model, sample.cov = Sf, estimator = "DWLS", se = "standard", WLS.V = solve(Vf),
                        sample.nobs = 2, optim.dx.tol = .01, optim.force.converged = TRUE,
                        control = list(iter.max = 1)))$value
ord <- .rearrange(k = k + 1, fit = ro, names = rownames(Sf))
base <- .commonfactorGWAS_main(1, cores = 1, 1, S_LD, V_LD, I_LD, beta, se, varSNP, varSNPSE2, "standard",
                               coords, k, FALSE, model, toler, "DWLS", ord, returnlavmodel = TRUE)
out <- NULL
for (i in seq_len(nrow(snps))) {
  r <- tryCatch(.commonfactorGWAS_main(i, cores = 1, 1, S_LD, V_LD, I_LD, beta, se, varSNP, varSNPSE2,
                                       "standard", coords, k, FALSE, model, toler, "DWLS", ord,
                                       basemodel = base), error = function(e) NULL)
  row <- if (is.null(r)) data.frame(SNP = snps$SNP[i], est = NA, se_c = NA, Q = NA, warning = "error")
         else data.frame(SNP = snps$SNP[i], est = r$est, se_c = r$se_c,
                         Q = suppressWarnings(as.numeric(r$Q)), warning = as.character(r$warning))
  out <- rbind(out, row)
}
out$est <- sprintf("%.17g", out$est); out$se_c <- sprintf("%.17g", out$se_c); out$Q <- sprintf("%.17g", out$Q)
out$warning <- gsub("[\r\n\"]", " ", out$warning)
write.csv(out, outp, row.names = FALSE)
"""


def _cov():
    d = json.loads(require_shared("fixtures", "gsem", "gwas_per_snp.json").read_text())
    return {"S": d["s"], "V": d["v"], "I": d["i_mat"], "trait_names": d["trait_names"]}


def _frame(traits, snps=SNPS) -> pl.DataFrame:
    rows = []
    for i, (name, maf, b, s) in enumerate(snps):
        r = {"SNP": name, "CHR": "1", "BP": 100 * i + 1, "MAF": maf, "A1": "A", "A2": "G"}
        for t, bb, ss in zip(traits, b, s):
            r[f"beta.{t}"] = bb
            r[f"se.{t}"] = ss
        rows.append(r)
    return pl.DataFrame(rows)


def _run_r(tmp_path: Path, cov: dict, df: pl.DataFrame) -> pl.DataFrame:
    src = genomicsem_r_sources(tmp_path / "R", ("utils.R", "utils_sanitychecks.R", "commonfactorGWAS_main.R"),
                               ("lavaan", "Matrix"))
    inp = tmp_path / "in"
    inp.mkdir()
    k = len(cov["trait_names"])
    fmt = lambda a: " ".join(repr(float(x)) for x in np.asarray(a, dtype=np.float64).flatten(order="F"))  # noqa: E731
    (inp / "k.txt").write_text(str(k))
    (inp / "S.txt").write_text(fmt(cov["S"]))
    (inp / "V.txt").write_text(fmt(cov["V"]))
    (inp / "I.txt").write_text(fmt(cov["I"]))
    (inp / "traits.txt").write_text("\n".join(cov["trait_names"]) + "\n")
    df.write_csv(inp / "snps.csv", float_precision=None)
    (tmp_path / "driver.R").write_text(R_DRIVER)
    out = tmp_path / "r_out.csv"
    res = subprocess.run(["Rscript", str(tmp_path / "driver.R"), str(src), str(inp), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return pl.read_csv(out, infer_schema_length=0).with_columns(
        pl.col("est", "se_c", "Q").replace("NA", None).cast(pl.Float64))


def test_commonfactor_gwas_matches_r_lavaan(tmp_path):
    """est / se / Q as R's .commonfactorGWAS_main under lavaan, including SNPs the earlier fit
    reported as not converged."""
    cov = _cov()
    df = _frame(cov["trait_names"])
    ref = _run_r(tmp_path, cov, df)
    ours = commonfactor_gwas(df, cov)
    assert ref["SNP"].to_list() == ours["SNP"].to_list()
    assert ref["se_c"].is_not_null().all() and ref["Q"].is_not_null().all()
    assert ours["converged"].all(), ours.select("SNP", "warning")
    np.testing.assert_allclose(ours["est"].to_numpy(), ref["est"].to_numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours["se"].to_numpy(), ref["se_c"].to_numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ours["Q"].to_numpy(), ref["Q"].to_numpy(), atol=1e-3, rtol=0)


def _gen(cov, n=300, seed=5):
    k = len(cov["trait_names"])
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.01, 0.05, (n, k))
    z = 0.6 * rng.normal(0, 1, (n, 1)) + 0.8 * rng.normal(0, 1, (n, k))
    snps = [(f"rs{i}", float(m), tuple(z[i] * se[i]), tuple(se[i]))
            for i, m in enumerate(rng.uniform(0.01, 0.5, n))]
    return _frame(cov["trait_names"], snps)


def test_reduced_fit_equals_general_multistart_fit():
    """On SNPs where the general kernel's multi-start fit (8 starts, full parameter space)
    converges to the same minimum, the reduced fit gives the same estimates and SEs; it converges
    on (almost) every SNP."""
    cov = _cov()
    df = _gen(cov)
    new = commonfactor_gwas(df, cov)
    assert new["converged"].mean() > 0.97
    plan = plan_commonfactor(None, cov, "DWLS", "standard", False, None, False, None)
    plan.beta_cols, plan.se_cols, plan.id_cols, plan.var_col = resolve_columns(df.schema, plan.traits, False)
    beta, se, var = extract_inputs(plan, df)
    old = run_stage(plan, plan.stage1, beta, se, var)
    ok = (old["status"] == ST_OK) & new["converged"].to_numpy()
    ob = old["est"][:, plan.est_row]
    same = ok & (np.abs(ob - new["est"].to_numpy()) < 1e-5)
    assert same.sum() > 0.9 * len(df)
    np.testing.assert_allclose(new["est"].to_numpy()[same], ob[same], atol=1e-7, rtol=0)
    np.testing.assert_allclose(new["se"].to_numpy()[same], old["se"][same, plan.est_row], atol=1e-7,
                               rtol=0)
    # where the two differ, the reduced fit found the lower DWLS objective
    from polgen.gsem.gwas_commonfactor import cf_stage1

    red = cf_stage1(plan, beta, se, var)
    diff = ok & ~same
    assert np.all(red["fmin"][diff] <= old["fmin"][diff] * (1 + 1e-9))


def test_batching_does_not_change_results():
    cov = _cov()
    df = _gen(cov, n=60, seed=9)
    a = commonfactor_gwas(df, cov, batch_size=10_000)
    b = commonfactor_gwas(df, cov, batch_size=7)
    from polars.testing import assert_frame_equal

    assert_frame_equal(a, b)
