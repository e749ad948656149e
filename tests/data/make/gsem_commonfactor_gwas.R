# R GenomicSEM's per-SNP commonfactorGWAS function (.commonfactorGWAS_main) on the inputs written by
# tests/data/make/gsem_r.py (set "commonfactor_gwas").  Usage:
#   Rscript gsem_commonfactor_gwas.R <GenomicSEM R/ directory> <input directory> <output csv>
# Our own driver around GenomicSEM's per-SNP function: the variable order model and the base
# model from the first SNP as commonfactorGWAS sets them up, then each SNP in a tryCatch (R's own
# loop stops the whole run on the first SNP whose information matrix is singular).
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
