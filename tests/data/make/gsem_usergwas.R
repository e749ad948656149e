# R GenomicSEM userGWAS (serial path) and the equivalent per-SNP lavaan calls, on the inputs written
# by tests/data/make/gsem_r.py (set "usergwas").  Usage:
#   Rscript gsem_usergwas.R <GenomicSEM R/ directory> <data directory>
# reads S.csv V.csv I.csv snps.csv cases.tsv from the data directory, writes out.csv there.
# GenomicSEM's own R sources are sourced from the directory given (they are not part of polgen);
# the few stringr/gdata helpers they call are replaced by base-R stand-ins (below, polgen's code).

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

run_usergwas <- function(cs) {
  model <- gsub("\\n", "\n", cs$model, fixed = TRUE)
  capture.output(res <- userGWAS(covstruc = list(V_LD, S_LD, I_LD), SNPs = snps[seq_len(cs$nsnp), ],
                 model = model, estimation = cs$est, fix_measurement = cs$fm, parallel = FALSE))
  res <- do.call(rbind, res)
  data.frame(case = cs$case, SNP = res$SNP, lhs = res$lhs, op = res$op, rhs = res$rhs, est = res$est,
             se = suppressWarnings(as.numeric(res$SE)), chisq = res$chisq, df = res$chisq_df)
}

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

out <- NULL
for (ci in seq_len(nrow(cases))) {
  cs <- cases[ci, ]
  out <- rbind(out, if (cs$kind == "usergwas") run_usergwas(cs) else run_persnp(cs))
}
# 17 significant digits (write.csv alone keeps 15)
num <- vapply(out, is.numeric, TRUE)
out[num] <- lapply(out[num], function(x) ifelse(is.na(x), NA, sprintf("%.17g", x)))
write.csv(out, file.path(d, "out.csv"), row.names = FALSE, quote = FALSE)
