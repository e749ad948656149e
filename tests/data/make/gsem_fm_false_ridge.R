# Per-SNP lavaan fits of R GenomicSEM userGWAS(fix_measurement = FALSE) on the bench's PGC covstruc
# (a Heywood no-SNP fit: T2's residual variance -0.073), for SNPs where the DWLS objective has no
# finite minimum (the fit runs off: T2's loading grows without bound, its residual variance to
# minus infinity) and SNPs with a finite one.  The fit is userGWAS's own call (sem(..., estimator =
# "DWLS", WLS.V = diag(1 / diag(V_full)), sample.nobs = 2, optim.dx.tol = .01)) on S_full / V_full
# built by GenomicSEM's helpers; R's userGWAS itself stops the whole run at the first SNP whose
# information matrix is singular, so the fits are made one by one and lavaan's convergence flag,
# iterations and estimates recorded.  Usage (written by polgen, reading GenomicSEM's R sources):
#   Rscript gsem_fm_false_ridge.R <GenomicSEM R/ directory> <data directory> <1-based SNP rows...>
# reads S.csv V.csv I.csv snps.csv, writes persnp.csv.
suppressMessages({library(lavaan); library(Matrix)})
lowerTriangle <- function(x, diag = FALSE) x[lower.tri(x, diag = diag)]
str_detect <- function(s, p) grepl(p, s)
str_replace_all <- function(s, p, r) gsub(p, r, s, fixed = TRUE)
fixed <- function(x) x
args <- commandArgs(TRUE); src <- args[1]; d <- args[2]; idxs <- as.integer(args[-(1:2)])
for (f in c("utils.R", "utils_sanitychecks.R", "userGWAS.R", "userGWAS_main.R")) source(file.path(src, f))
S_LD <- as.matrix(read.csv(file.path(d, "S.csv"))); V_LD <- as.matrix(read.csv(file.path(d, "V.csv")))
I_LD <- as.matrix(read.csv(file.path(d, "I.csv")))
snps <- read.csv(file.path(d, "snps.csv"), colClasses = c(SNP = "character", CHR = "character",
                 A1 = "character", A2 = "character"))
model <- "F1 =~ NA*T1 + T2 + T3\nF1 ~ SNP\nF1 ~~ 1*F1\nSNP ~~ SNP"
k <- ncol(S_LD); beta_SNP <- snps[, grep("beta.", colnames(snps), fixed = TRUE)]
SE_SNP <- snps[, grep("se.", colnames(snps), fixed = TRUE)]
varSNP <- 2 * snps$MAF * (1 - snps$MAF); I2 <- I_LD; diag(I2) <- ifelse(diag(I2) <= 1, 1, diag(I2))
coords <- which(I2 != 'NA', arr.ind = TRUE)
ov <- lavNames(lavaanify(model), "ov")
rows <- NULL
for (i in idxs) {
  V_SNP <- .get_V_SNP(SE_SNP, I2, varSNP, "standard", coords, k, i)
  Vf <- .get_V_full(k, V_LD, (.0005)^2, V_SNP)
  if (eigen(Vf)$values[nrow(Vf)] <= 0) Vf <- as.matrix(nearPD(Vf, corr = FALSE)$mat)
  Sf <- .get_S_Full(k, S_LD, varSNP, beta_SNP, FALSE, i)
  if (eigen(Sf)$values[nrow(Sf)] <= 0) Sf <- as.matrix(nearPD(Sf, corr = FALSE)$mat)
  K <- ncol(Sf); pos <- matrix(0, K, K); pos[lower.tri(pos, diag = TRUE)] <- seq_len(K * (K + 1) / 2)
  pos[upper.tri(pos)] <- t(pos)[upper.tri(pos)]
  idx <- match(ov, colnames(Sf)); p <- length(ov); sel <- integer(0)
  for (b in 1:p) for (a in b:p) sel <- c(sel, pos[idx[a], idx[b]])
  W <- diag(1 / diag(Vf[sel, sel]))
  warn <- ""
  fit <- withCallingHandlers(
    tryCatch(sem(model, sample.cov = Sf, estimator = "DWLS", WLS.V = W, sample.nobs = 2,
                 optim.dx.tol = .01, se = "none"), error = function(e) NULL),
    warning = function(w) { warn <<- paste(warn, conditionMessage(w)); invokeRestart("muffleWarning") })
  pt <- parTable(fit)
  g <- function(l, o, r) pt$est[pt$lhs == l & pt$op == o & pt$rhs == r]
  rows <- rbind(rows, data.frame(
    SNP = snps$SNP[i], converged = lavInspect(fit, "converged"), iterations = lavInspect(fit, "iterations"),
    lambda1 = g("F1", "=~", "T1"), lambda2 = g("F1", "=~", "T2"), lambda3 = g("F1", "=~", "T3"),
    b = g("F1", "~", "SNP"), theta1 = g("T1", "~~", "T1"), theta2 = g("T2", "~~", "T2"),
    theta3 = g("T3", "~~", "T3"), warning = gsub("\n", " ", trimws(warn))))
}
write.csv(rows, file.path(d, "persnp.csv"), row.names = FALSE)
