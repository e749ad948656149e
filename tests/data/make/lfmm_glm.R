# R glm() per locus with the latent factors as covariates (the lfmm package's glm_test / LEA's
# lfmm2.test(linear = FALSE)): for each column y of Y, glm(y ~ ., data.frame(scale(X, scale = FALSE), U),
# family) (binomial with t trials: cbind(y, t - y)); NA genotypes are dropped (na.omit).  Base R only.
# Usage: Rscript lfmm_glm.R <dir> <set> <family> <trials>
#   reads <set>_Y.csv, <set>_X.csv, <set>_U.csv; writes <set>_<family><trials>.csv with, per locus,
#   est, se, z, p of each X column, then deviance and iterations (17 significant digits).
a <- commandArgs(TRUE)
d <- a[1]; set <- a[2]; fam <- a[3]; t <- as.numeric(a[4])
rd <- function(f) as.matrix(read.csv(file.path(d, paste0(set, "_", f, ".csv")), header = FALSE, na.strings = "NA"))
Y <- rd("Y"); X <- rd("X"); U <- rd("U")
colnames(X) <- paste0("X", seq_len(ncol(X))); colnames(U) <- paste0("U", seq_len(ncol(U)))
k <- ncol(X)
df <- data.frame(scale(X, scale = FALSE), U)
family <- if (fam == "binomial") binomial(link = "logit") else poisson(link = "log")
out <- t(sapply(seq_len(ncol(Y)), function(j) {
  y <- Y[, j]
  m <- if (fam == "binomial" && t != 1) {
    suppressWarnings(glm(cbind(y, t - y) ~ ., data = df, family = family))
  } else {
    suppressWarnings(glm(y ~ ., data = df, family = family))
  }
  cf <- summary(m)$coefficients[2:(k + 1), , drop = FALSE]
  c(cf[, 1], cf[, 2], cf[, 3], cf[, 4], m$deviance, m$iter)
}))
write.table(matrix(sprintf("%.17g", out), nrow(out)), file.path(d, paste0(set, "_", fam, t, ".csv")), sep = ",",
            row.names = FALSE, col.names = FALSE, quote = FALSE)
