# GenomicSEM's usermodel steps run with lavaan directly (no GenomicSEM sources needed): reorder V to
# lavaan's variable order, DWLS with W = diag(1/diag(V)), sandwich SEs from lavInspect(fit, "delta") /
# "WLS.V", delta method for := from lavaan's complex-step Jacobian, Q by eigen-decomposition, CFI
# closed form, lavaan's SRMR, and the standardized refit with standardizedSolution().  Usage:
#   Rscript gsem_sem_lavaan.R <cases.txt>      (prints "##CASE name" blocks of "KEY values...")
# cases.txt is written by tests/data/make/gsem_r.py (set "sem_lavaan"), 7 lines per case.
suppressMessages(library(lavaan)); options(digits=17)
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
