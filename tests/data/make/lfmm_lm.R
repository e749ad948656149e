# R's lm / summary on the Y, X, U written by tests/data/make/lfmm_r.py: the t statistics of the X
# coefficients in lm(Y ~ X + U) and LEA's full-model F and adjusted R^2 (lm of the U-residualised Y
# on the U-residualised X).  Base R only.  Usage:
#   Rscript lfmm_lm.R <data directory>        (reads Y.csv X.csv U.csv, writes lm.csv)
d <- commandArgs(TRUE)[1]
Y <- as.matrix(read.csv(file.path(d, "Y.csv"), header = FALSE))
X <- as.matrix(read.csv(file.path(d, "X.csv"), header = FALSE))
U <- as.matrix(read.csv(file.path(d, "U.csv"), header = FALSE)); k <- ncol(X)
sm <- summary(lm(Y ~ ., data = data.frame(X, U)))
z <- sapply(sm, function(x) x$coeff[2:(k + 1), 3])
rY <- lm(Y ~ ., data = data.frame(U))$residuals; rX <- lm(X ~ ., data = data.frame(U))$residuals
sf <- summary(lm(rY ~ rX))
f <- sapply(sf, function(x) x$fstat[1]); r2 <- sapply(sf, function(x) x$adj.r.squared)
# rows: t of X1, t of X2, F, adjusted R^2; one column per SNP (17 significant digits)
out <- rbind(z, f, r2)
write.table(matrix(sprintf("%.17g", out), nrow(out)), file.path(d, "lm.csv"), sep = ",", row.names = FALSE,
            col.names = FALSE, quote = FALSE)
