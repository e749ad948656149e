# The lfmm R package's lfmm_lasso and lfmm_ridge_CV (github.com/bcm-uga/lfmm, installed from its
# sources: R CMD INSTALL -l <lib> <lfmm source>) on the first 1,500 SNPs of polgen's A. thaliana
# subset (the package's own example data).  Usage:
#   Rscript lfmm_lasso.R <lib with lfmm> <directory>   (reads Y.csv.gz, X.csv; writes the outputs)
a <- commandArgs(TRUE)
suppressMessages(library(lfmm, lib.loc = a[1]))
d <- a[2]
Y <- as.matrix(read.csv(file.path(d, "Y.csv.gz"), header = FALSE))
X <- as.matrix(read.csv(file.path(d, "X.csv"), header = FALSE))
w <- function(m, f) {
  m <- as.matrix(m)
  write.table(matrix(sprintf("%.17g", m), nrow(m)), file.path(d, f), sep = ",", row.names = FALSE,
              col.names = FALSE, quote = FALSE)
}
# the lambda path, stopping at 2% non-zero effects
m <- suppressMessages(lfmm_lasso(Y, X, K = 3, nozero.prop = 0.02))
w(m$B, "path_B.csv"); w(m$U, "path_U.csv")
w(c(m$params$gamma, m$params$lambda.range), "path_gamma_lambdas.csv")
# one given lambda
lam <- m$params$lambda.range[5]
f <- suppressMessages(lfmm_lasso(Y, X, K = 3, lambda = lam))
w(f$B, "fixed_B.csv"); w(f$U, "fixed_U.csv"); w(lam, "fixed_lambda.csv")
# ridge cross-validation: one call per (lambda, K) with the folds it draws recorded
rec <- new.env(); rec$folds <- list()
orig <- get("left.out.kfold", envir = asNamespace("lfmm"))
wrapped <- function(kfold, J) { r <- orig(kfold, J); rec$folds[[length(rec$folds) + 1]] <- r; r }
assignInNamespace("left.out.kfold", wrapped, "lfmm")
suppressMessages(library(foreach))
cv <- list(); k <- 0
for (K in c(2, 4)) for (lambda in c(1e-5, 10)) {
  k <- k + 1
  set.seed(k); rec$folds <- list()
  r <- suppressWarnings(suppressMessages(lfmm_ridge_CV(Y, X, n.fold.row = 3, n.fold.col = 4,
                                                      lambdas = lambda, Ks = K)))
  cv[[k]] <- data.frame(case = k, K = K, lambda = lambda, err = r$err)
  # folds, one line per index set: case, call (1 = the row folds, 2.. = the column folds, as positions in
  # the kept-column order, of each row fold in turn), set number, then the 1-based indices
  lines <- unlist(lapply(seq_along(rec$folds), function(i) sapply(seq_along(rec$folds[[i]]), function(l)
    paste(c(k, i, l, rec$folds[[i]][[l]]), collapse = " "))))
  cat(lines, file = file.path(d, "cv_folds.txt"), sep = "\n", append = k > 1)
}
cv <- do.call(rbind, cv)
write.csv(transform(cv, err = sprintf("%.17g", err)), file.path(d, "cv_err.csv"), row.names = FALSE, quote = FALSE)
writeLines(c(R.version.string, paste("lfmm", packageVersion("lfmm", lib.loc = a[1]))), file.path(d, "R_VERSION.txt"))
