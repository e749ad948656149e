"""Cross-check of the SEM engine against R lavaan 0.6.x run directly (skipped without Rscript).

The R script below follows GenomicSEM's usermodel steps with lavaan: reorder V to lavaan's variable
order, DWLS with W = diag(1/diag(V)), sandwich SEs from lavInspect(fit, "delta") / "WLS.V", delta
method for := from lavaan's complex-step Jacobian, Q by eigen-decomposition, CFI closed form,
lavaan's SRMR, and the standardized refit with standardizedSolution().  Debian's lavaan 0.6.14
matches the GenomicSEM fixtures for DWLS to ~2e-8.  For ML only the estimates are compared (lavaan
0.6.14's ML WLS.V differs from the version the fixtures were made with).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from polgen.gsem.fit_models import usermodel

pytestmark = pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not installed")

R_SCRIPT = r'''
suppressMessages(library(lavaan)); options(digits=15)
run_case <- function(args) {
  k <- as.integer(args[4]); est <- args[5]
  S <- matrix(scan(text=args[1], quiet=TRUE), k, k)
  V <- matrix(scan(text=args[2], quiet=TRUE), k*(k+1)/2, k*(k+1)/2)
  model <- args[3]
  nm <- paste0("V", 1:k); colnames(S) <- rownames(S) <- nm
  if (min(eigen(S)$values) <= 0) S <- as.matrix(Matrix::nearPD(S, corr=FALSE)$mat)
  if (min(eigen(V)$values) <= 0) V <- as.matrix(Matrix::nearPD(V, corr=FALSE)$mat)
  colnames(S) <- rownames(S) <- nm
  reord <- function(fit) {
    o2 <- rownames(inspect(fit)[[1]]); kk <- length(o2)
    A <- matrix(NA, kk, kk); A[lower.tri(A, diag=TRUE)] <- 1:(kk*(kk+1)/2); A <- t(A)
    A[lower.tri(A, diag=TRUE)] <- 1:(kk*(kk+1)/2); colnames(A) <- rownames(A) <- nm
    lav_matrix_vech(A[o2, o2])
  }
  f0 <- sem(model, sample.cov=S, estimator="DWLS", WLS.V=solve(V), sample.nobs=2, warn=FALSE, optim.dx.tol=0.01, optim.force.converged=TRUE, control=list(iter.max=1))
  ord <- reord(f0)
  Vr <- V[ord, ord]; W <- diag(1/diag(Vr))
  if (est == "ML") fit <- sem(model, sample.cov=S, estimator="ML", sample.nobs=200, optim.dx.tol=0.01, sample.cov.rescale=FALSE) else fit <- sem(model, sample.cov=S, estimator="DWLS", WLS.V=W, sample.nobs=2, optim.dx.tol=0.01, optim.force.converged=TRUE)
  D <- lavInspect(fit, "delta"); Wl <- lavInspect(fit, "WLS.V")
  bread <- solve(t(D) %*% Wl %*% D); L <- Wl %*% D
  Om <- bread %*% t(L) %*% Vr %*% L %*% bread
  pt <- parTable(fit)
  free <- pt[pt$free > 0, ]
  cat("EST", free$est, "\n"); cat("SE", sqrt(diag(Om)), "\n")
  if (any(pt$op == ":=")) {
    x <- lavaan:::lav_model_get_parameters(fit@Model, type="free")
    J <- lavaan:::lav_func_jacobian_complex(func=fit@Model@def.function, x=x)
    cat("DEF", pt$est[pt$op == ":="], "\n"); cat("DEFSE", sqrt(diag(J %*% Om %*% t(J))), "\n")
  }
  imp <- fitted(fit)$cov[nm, nm]
  eta <- lav_matrix_vech(S - imp); e <- eigen(V)
  Q <- t(eta) %*% e$vectors %*% diag(1/e$values) %*% t(e$vectors) %*% eta
  S0 <- S; diag(S0) <- 0; eta0 <- lav_matrix_vech(S0)
  Q0 <- t(eta0) %*% e$vectors %*% diag(1/e$values) %*% t(e$vectors) %*% eta0
  df <- fitMeasures(fit, "df"); dfc <- k*(k+1)/2 - k
  cat("FIT", Q, df, fitMeasures(fit, "npar"), fitMeasures(fit, "srmr"), min(1, ((Q0-dfc)-(Q-df))/(Q0-dfc)), "\n")
  if (length(args) >= 6 && args[6] == "QF") {
    lv <- lavInspect(fit, "cor.lv"); lv[upper.tri(lv, diag=TRUE)] <- 0
    ind <- which(lv != 0, arr.ind=TRUE); resid <- S - imp
    y <- expand.grid(nm, nm); y <- y[!duplicated(apply(y, 1, function(x) paste(sort(x), collapse=''))), ]
    vn <- paste(y$Var1, y$Var2)
    for (p in 1:nrow(ind)) {
      f1 <- rownames(lv)[ind[p, 1]]; f2 <- colnames(lv)[ind[p, 2]]
      i1 <- pt$rhs[pt$lhs == f1 & pt$op == "=~"]; i2 <- pt$rhs[pt$lhs == f2 & pt$op == "=~"]
      sub <- resid[i1, i2, drop=FALSE]; eta <- as.vector(sub)
      g <- expand.grid(rownames(sub), colnames(sub)); n1 <- paste(g$Var1, g$Var2); n2 <- paste(g$Var2, g$Var1)
      pos <- match(ifelse(n1 %in% vn, n1, n2), vn); ev <- eigen(V[pos, pos])
      qq <- t(eta) %*% ev$vectors %*% diag(1/ev$values, length(ev$values)) %*% t(ev$vectors) %*% eta
      cat(paste0("QF_", f1, "_", f2), qq, length(eta) - 1, "\n")
    }
  }
  Dm <- diag(1/sqrt(diag(S))); Ss <- Dm %*% S %*% Dm; colnames(Ss) <- rownames(Ss) <- nm
  sc <- lav_matrix_vech(Ss / S); sc[is.nan(sc)] <- 0
  dv <- sqrt(diag(V)) * sc; Vs <- diag(dv) %*% cov2cor(V) %*% diag(dv)
  Vs2 <- diag(diag(Vs)); diag(Vs2)[diag(Vs2) == 0] <- 2e-9
  if (est == "ML") fs <- sem(model, sample.cov=Ss, estimator="ML", sample.nobs=200, optim.dx.tol=0.01, sample.cov.rescale=FALSE) else fs <- sem(model, sample.cov=Ss, estimator="DWLS", WLS.V=solve(Vs2[ord, ord]), sample.nobs=2, optim.dx.tol=0.01)
  Ds <- lavInspect(fs, "delta"); Ws <- lavInspect(fs, "WLS.V"); bs <- solve(t(Ds) %*% Ws %*% Ds); Ls <- Ws %*% Ds
  Oms <- bs %*% t(Ls) %*% Vs[ord, ord] %*% Ls %*% bs
  pts <- parTable(fs)
  cat("STD", pts$est[pts$free > 0], "\n"); cat("STDSE", sqrt(diag(Oms)), "\n")
  ss <- standardizedSolution(fs); ss <- ss[!is.na(ss$pvalue), ]
  cat("STDALL", paste(ss$lhs, ss$op, ss$rhs, sep="|"), "\n"); cat("STDALLV", ss$est.std, "\n")
}
cases <- readLines(commandArgs(TRUE)[1])
i <- 1
while (i + 6 <= length(cases)) {
  name <- cases[i]
  a <- c(cases[i + 1], cases[i + 2], gsub("\\\\n", "\n", cases[i + 3]), cases[i + 4], cases[i + 5], cases[i + 6])
  cat("##CASE", name, "\n")
  tryCatch(run_case(a), error = function(e) cat("ERROR", gsub("\n", " ", conditionMessage(e)), "\n"))
  i <- i + 7
}
'''

MODELS = {
    "cross_loading_defined": ("F1 =~ NA*V1 + a*V2 + V3\nF2 =~ NA*V3 + b*V4 + V5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\n"
                              "F1 ~~ F2\nab := a*b\nr := ab/(1 + a^2)"),
    "structural_marker": "F1 =~ V1 + V2 + V3\nF2 =~ V4 + V5\nF2 ~ F1\nV1 ~~ V4",
    "observed_outcome": "F1 =~ NA*V1 + V2 + V3 + V4\nF1 ~~ 1*F1\nV5 ~ c*F1\nc2 := c^2",
    # traits that only predict: lavaan's DWLS resolves fixed.x to FALSE (free variances/covariance)
    "trait_predictors": "F1 =~ V1 + V2 + V3\nF1 ~ V4 + V5",
    # six traits
    "higher_order": "F1 =~ V1 + V2\nF2 =~ V3 + V4\nF3 =~ V5 + V6\nG =~ NA*F1 + F2 + F3\nG ~~ 1*G",
    "equal_labels": "F1 =~ NA*V1 + a*V2 + a*V3 + V4 + V5 + V6\nF1 ~~ 1*F1",
    "linear_constraint": "F1 =~ NA*V1 + a*V2 + b*V3 + V4 + V5 + V6\nF1 ~~ 1*F1\na == b + 0.05",
    "nonlinear_constraint": ("F1 =~ NA*V1 + a*V2\nF2 =~ NA*V3 + b*V4\nF3 =~ NA*V5 + V6\nF1~~1*F1\nF2~~1*F2\n"
                             "F3~~1*F3\na == b^2\nd := a - b"),
    "inequality": ("F1 =~ NA*V1 + a*V2\nF2 =~ NA*V3 + b*V4\nF3 =~ NA*V5 + V6\nF1~~1*F1\nF2~~1*F2\n"
                   "F3~~1*F3\na > b + 0.15"),
}
SIX = {"higher_order", "equal_labels", "linear_constraint", "nonlinear_constraint", "inequality"}
# a Heywood case (V3 wants -0.15) with GenomicSEM's fix_resid bound: lavaan's inequality constraint
MODELS["bounded_heywood"] = ("F1 =~ NA*V1 + V2\nF2 =~ NA*V3 + V4\nF1 ~~ 1*F1\nF2 ~~ 1*F2\n"
                             "V3 ~~ abcd*V3\nabcd > .0001")
FOUR = {"bounded_heywood"}


def _data6():
    rng = np.random.default_rng(7)
    L = np.array([[.7, 0, 0], [.6, 0, 0], [0, .65, 0], [0, .55, 0], [0, 0, .6], [0, 0, .5]])
    phi = np.array([[1, .3, .2], [.3, 1, .35], [.2, .35, 1]])
    S = L @ phi @ L.T + np.diag([.3, .4, .35, .45, .4, .5])
    E = rng.normal(scale=0.02, size=(6, 6))
    S = S + (E + E.T) / 2
    A = rng.normal(size=(21, 21)) * 0.0003
    V = np.diag(rng.uniform(0.0005, 0.002, 21)) + A @ A.T
    return S, V


def _data4():
    S = np.array([[0.6, 0.42, 0.1, 0.05], [0.42, 0.5, 0.08, 0.04], [0.1, 0.08, 0.45, 0.3], [0.05, 0.04, 0.3, 0.55]])
    rng = np.random.default_rng(9)
    A = rng.normal(size=(10, 10)) * 0.0003
    return S, np.eye(10) * 1e-3 + A @ A.T


def _data(name: str = ""):
    if name in SIX:
        return _data6()
    if name in FOUR:
        return _data4()
    rng = np.random.default_rng(5)
    L = np.array([[.7, 0], [.6, 0], [.3, .5], [0, .6], [0, .5]])
    phi = np.array([[1, .4], [.4, 1]])
    S = L @ phi @ L.T + np.diag([.3, .4, .35, .3, .45])
    E = rng.normal(scale=0.02, size=(5, 5))
    S = S + (E + E.T) / 2
    A = rng.normal(size=(15, 15)) * 0.0003
    V = np.diag(rng.uniform(0.0005, 0.002, 15)) + A @ A.T
    return S, V


def _fmt(a):
    return " ".join(repr(float(x)) for x in np.asarray(a).ravel(order="F"))


def _run_r_batch(tmp_path, cases):
    """Run the R script once for all ``cases`` = {name: (S, V, model, est, extra)}."""
    script = tmp_path / "um.R"
    script.write_text(R_SCRIPT)
    lines = []
    for name, (S, V, model, est, extra) in cases.items():
        lines += [name, _fmt(S), _fmt(V), model.replace("\n", "\\n"), str(S.shape[0]), est, extra or "-"]
    inp = tmp_path / "cases.txt"
    inp.write_text("\n".join(lines) + "\n")
    res = subprocess.run(["Rscript", str(script), str(inp)], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.skip(f"lavaan run failed: {res.stderr[-400:]}")
    out: dict[str, dict] = {}
    cur = None
    for line in res.stdout.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "##CASE":
            cur = out.setdefault(parts[1], {})
        elif cur is not None:
            cur[parts[0]] = parts[1:]
    return out


def _run_r(tmp_path, S, V, model, est, extra=()):
    out = _run_r_batch(tmp_path, {"one": (S, V, model, est, extra[0] if extra else "")})["one"]
    if "ERROR" in out:
        pytest.skip("lavaan: " + " ".join(out["ERROR"]))
    return out


QF_MODEL = "F1 =~ NA*V1 + V2\nF2 =~ NA*V3 + V4\nF3 =~ NA*V5 + V6 + V4\nF1~~1*F1\nF2~~1*F2\nF3~~1*F3"


@pytest.fixture(scope="module")
def r_ref(tmp_path_factory):
    cases = {name: (*_data(name), MODELS[name], "DWLS", "") for name in MODELS}
    cases["ml_structural"] = (*_data(), MODELS["structural_marker"], "ML", "")
    cases["ml_fixed_x"] = (*_data(), MODELS["trait_predictors"], "ML", "")
    cases["q_factor"] = (*_data6(), QF_MODEL, "DWLS", "QF")
    return _run_r_batch(tmp_path_factory.mktemp("lavaan"), cases)


@pytest.mark.parametrize("name", list(MODELS))
def test_usermodel_dwls_matches_lavaan(r_ref, name):
    S, V = _data(name)
    model = MODELS[name]
    r = r_ref[name]
    assert "ERROR" not in r, r.get("ERROR")
    res = usermodel({"S": S, "V": V, "trait_names": [f"V{i}" for i in range(1, S.shape[0] + 1)]}, model)
    p = res.parameters
    free = p.filter(p["free"])
    # lavaan's constrained optimiser stops ~2e-6 from the optimum with equality constraints
    np.testing.assert_allclose(free["est"].to_numpy(), np.array(r["EST"], float), rtol=0, atol=1e-5)
    np.testing.assert_allclose(free["se"].to_numpy(), np.array(r["SE"], float), rtol=1e-4, atol=1e-6)
    if "DEF" in r:
        d = p.filter(p["op"] == ":=")
        np.testing.assert_allclose(d["est"].to_numpy(), np.array(r["DEF"], float), rtol=0, atol=1e-5)
        np.testing.assert_allclose(d["se"].to_numpy(), np.array(r["DEFSE"], float), rtol=1e-4, atol=1e-7)
    q, df, npar, srmr, cfi = (float(x) for x in r["FIT"])
    f = res.fit_all.row(0, named=True)
    assert f["chisq"] == pytest.approx(q, abs=1e-3, rel=1e-4)
    assert f["df"] == int(df)
    assert f["AIC"] == pytest.approx(q + 2 * npar, abs=1e-3, rel=1e-4)
    assert f["SRMR"] == pytest.approx(srmr, abs=1e-5)
    assert f["CFI"] == pytest.approx(cfi, abs=1e-5)
    np.testing.assert_allclose(free["est_std"].to_numpy(), np.array(r["STD"], float), rtol=0, atol=1e-5)
    np.testing.assert_allclose(free["se_std"].to_numpy(), np.array(r["STDSE"], float), rtol=1e-4, atol=1e-6)
    keys = [tuple(k.split("|")) for k in r["STDALL"]]
    vals = np.array(r["STDALLV"], float)
    for key, v in zip(keys, vals):
        row = p.filter((p["lhs"] == key[0]) & (p["op"] == key[1]) & (p["rhs"] == key[2]))
        assert row.height == 1, key
        assert row["std_all"][0] == pytest.approx(v, abs=1e-5), key


def test_usermodel_ml_estimates_match_lavaan(r_ref):
    S, V = _data()
    model = MODELS["structural_marker"]
    r = r_ref["ml_structural"]
    res = usermodel({"S": S, "V": V, "trait_names": [f"V{i}" for i in range(1, 6)]}, model, estimation="ML")
    free = res.parameters.filter(res.parameters["free"])
    np.testing.assert_allclose(free["est"].to_numpy(), np.array(r["EST"], float), rtol=0, atol=1e-5)
    np.testing.assert_allclose(free["est_std"].to_numpy(), np.array(r["STD"], float), rtol=0, atol=1e-5)
    # lavaan 0.6.14's ML WLS.V is the structured expected information 0.5 D'(Sigma^-1 x Sigma^-1) D,
    # which is also what current lavaan returns without fixed.x covariates: SEs compared too
    np.testing.assert_allclose(free["se"].to_numpy(), np.array(r["SE"], float), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(free["se_std"].to_numpy(), np.array(r["STDSE"], float), rtol=1e-3, atol=1e-6)
    assert res.fit_all["df"][0] == int(float(r["FIT"][1]))
    assert res.fit_all["SRMR"][0] == pytest.approx(float(r["FIT"][3]), abs=1e-5)


def test_q_factor_matches_genomicsem_algorithm_in_r(r_ref):
    S, V = _data6()
    model = QF_MODEL
    r = r_ref["q_factor"]
    res = usermodel({"S": S, "V": V, "trait_names": [f"V{i}" for i in range(1, 7)]}, model, Q_Factor=True)
    qf = res.q_factor
    assert qf.height == 3
    for row in qf.iter_rows(named=True):
        q, df = r[f"QF_{row['Factor1']}_{row['Factor2']}"]
        assert row["QFactor_chisq"] == pytest.approx(float(q), rel=1e-4, abs=1e-6)
        assert row["QFactor_df"] == int(float(df))


def test_usermodel_ml_fixed_x_matches_lavaan(r_ref):
    """ML resolves fixed.x to TRUE: predictor variances fixed, their block zeroed in WLS.V."""
    S, V = _data()
    r = r_ref["ml_fixed_x"]
    res = usermodel({"S": S, "V": V, "trait_names": [f"V{i}" for i in range(1, 6)]}, MODELS["trait_predictors"],
                    estimation="ML")
    free = res.parameters.filter(res.parameters["free"])
    np.testing.assert_allclose(free["est"].to_numpy(), np.array(r["EST"], float), rtol=0, atol=1e-5)
    np.testing.assert_allclose(free["se"].to_numpy(), np.array(r["SE"], float), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(free["se_std"].to_numpy(), np.array(r["STDSE"], float), rtol=1e-4, atol=1e-6)
    f = res.fit_all.row(0, named=True)
    assert f["df"] == int(float(r["FIT"][1]))
    assert f["chisq"] == pytest.approx(float(r["FIT"][0]), rel=1e-4)
    assert f["AIC"] == pytest.approx(float(r["FIT"][0]) + 2 * float(r["FIT"][2]), rel=1e-4)
