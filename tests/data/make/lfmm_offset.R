# R LEA's genetic.offset / genetic.gap on LEA's own offset_example data, run from LEA's R sources
# (lfmm2, genetic.offset and genetic.gap are base R: svd, solve, eigen, cov).  Usage:
#   Rscript lfmm_offset.R <LEA source dir (with R/ and data/)> <output directory>
# Writes geno.csv.gz (200 x 510), env.csv, env_pred.csv, env_new.csv (the inputs) and, per case,
# <case>_offset.csv (columns offset, distance per individual), <case>_eigenvalues.csv,
# <case>_vectors.csv; 17 significant digits.
a <- commandArgs(TRUE)
lea <- a[1]; out <- a[2]
suppressMessages(library(methods))
for (f in c("lfmm2.R", "genetic_offset.R", "genetic_gap.R")) source(file.path(lea, "R", f))
load(file.path(lea, "data", "offset_example.RData"))
Y <- offset_example$geno
X <- offset_example$env
Xp <- offset_example$env.pred
# a second "new" environment: the current one shifted, for the new.env argument
Xn <- X + outer(0.05 * sin(seq_len(nrow(X))), c(1, -1, 0.5, 0)) + 0.02
w <- function(m, f) {
  m <- as.matrix(m)
  write.table(matrix(sprintf("%.17g", m), nrow(m)), f, sep = ",", row.names = FALSE, col.names = FALSE, quote = FALSE)
}
gz <- gzfile(file.path(out, "geno.csv.gz"), "w")
write.table(Y, gz, sep = ",", row.names = FALSE, col.names = FALSE, quote = FALSE)
close(gz)
w(X, file.path(out, "env.csv")); w(Xp, file.path(out, "env_pred.csv")); w(Xn, file.path(out, "env_new.csv"))
save_case <- function(res, name) {
  w(cbind(res$offset, res$distance), file.path(out, paste0(name, "_offset.csv")))
  w(res$eigenvalues, file.path(out, paste0(name, "_eigenvalues.csv")))
  w(res$vectors, file.path(out, paste0(name, "_vectors.csv")))
}
cand <- c(3, 10, 11, 50, 77, 100, 101, 200, 333, 400, 450, 509)  # 1-based
save_case(genetic.offset(Y, env = X, pred.env = Xp, K = 2), "k2")
save_case(genetic.offset(Y, env = X, pred.env = Xp, K = 2, scale = TRUE), "k2_scale")
save_case(genetic.offset(Y, env = X, pred.env = Xp, K = c(2, 3, 5)), "k235")
save_case(genetic.offset(Y, env = X, pred.env = Xp, K = c(2, 3), scale = TRUE), "k23_scale")
save_case(genetic.offset(Y, env = X, pred.env = Xp, new.env = Xn, K = 3, candidate.loci = cand), "k3_new_cand")
save_case(genetic.gap(Y, env = X, pred.env = Xp, new.env = Xn, K = 2, scale = TRUE), "gap_k2_new_scale")
writeLines(as.character(cand), file.path(out, "candidate_loci.txt"))
writeLines(R.version.string, file.path(out, "R_VERSION.txt"))
