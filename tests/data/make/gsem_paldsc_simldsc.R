# R GenomicSEM's paLDSC() and simLDSC() on small synthetic inputs, for polgen's pa_ldsc / sim_ldsc
# parity tests (tests/gsem/test_pa_ldsc.py, tests/gsem/test_sim_ldsc.py).  Usage:
#   Rscript gsem_paldsc_simldsc.R <GenomicSEM R/ directory> <output directory>
# Writes into the output directory (tests/data/gsem/r/paldsc_simldsc/):
#   paldsc.json   per case: inputs (S, V, r, p, diag, fa, fm, nfactors), every MASS::mvrnorm draw R made
#                 (in call order), the data of the scree plots R printed (observed / simulated
#                 eigenvalues) and the "suggests extracting" lines;
#   fa.json       psych::fa(nearPD(x, corr = TRUE), nfactors, fm, SMC = FALSE, rotate = "none")$values
#                 for seeded matrices, every fm and 1-2 factors;
#   ld/           a synthetic LD-score folder (22 chromosomes x 40 SNPs, 3 decimals) simLDSC reads;
#   sim_<case>/   simLDSC's outputs (iter<r>GWAS<i>.sumstats.gz, covMatrix.tsv) and sigma.tsv.gz: the
#                 per-SNP covariance of the Z statistics R handed to mvrnorm (17 digits);
#   simldsc.json  the simLDSC cases' arguments.
# paLDSC's plotting packages are not needed: ggplot objects are only printed, and print() below keeps
# their data instead; egg / ggpubr / tictoc / GenomicSEM are declared installed and not loaded.
suppressMessages({
  library(MASS); library(Matrix); library(psych); library(gdata); library(matrixStats)
  library(ggplot2); library(lavaan); library(readr); library(R.utils); library(jsonlite)
})
args <- commandArgs(TRUE); src <- normalizePath(args[1]); out <- args[2]
dir.create(out, showWarnings = FALSE, recursive = TRUE); out <- normalizePath(out)

.skip <- c("egg", "ggpubr", "tictoc", "GenomicSEM", "doParallel")
installed.packages <- function(...) cbind(Package = c(rownames(utils::installed.packages()), .skip))
install.packages <- function(...) stop("install.packages called")
library <- function(package, character.only = FALSE, ...) {
  p <- if (character.only) package else deparse(substitute(package))
  if (p %in% .skip) return(invisible(NULL))
  suppressMessages(base::library(p, character.only = TRUE))
}
tic <- function(...) invisible(NULL)
toc <- function(...) invisible(NULL)
.draws <- list(); .sigmas <- list(); .plots <- list(); .msgs <- character()
mvrnorm <- function(n = 1, mu, Sigma, ...) {
  x <- MASS::mvrnorm(n = n, mu = mu, Sigma = Sigma, ...)
  .draws[[length(.draws) + 1]] <<- x
  if (.keep_sigma) .sigmas[[length(.sigmas) + 1]] <<- Sigma
  x
}
.keep_sigma <- FALSE
print <- function(x, ...) {
  if (inherits(x, "ggplot")) .plots[[length(.plots) + 1]] <<- x$data else base::print(x, ...)
  invisible(x)
}
cat <- function(...) {
  s <- paste(unlist(list(...)), collapse = " ")
  if (grepl("suggests extracting", s)) .msgs <<- c(.msgs, s)
  invisible(NULL)
}
for (f in c("paLDSC.R", "simLDSC.R")) eval(parse(file.path(src, f)), envir = globalenv())

# ---- paLDSC ------------------------------------------------------------------------------------
set.seed(20261202)
rand_v <- function(kstar, scale) { A <- matrix(rnorm(kstar * kstar), kstar); (crossprod(A) / kstar + diag(kstar)) * scale }
fix <- fromJSON(file.path(out, "..", "..", "fixtures", "newer", "paldsc.json"))
S4 <- fix$s; V4 <- fix$v
L5 <- cbind(c(.8, .7, .6, 0, 0), c(0, 0, .3, .7, .6))
S5 <- L5 %*% t(L5); diag(S5) <- 1
S6 <- matrix(.35, 6, 6); diag(S6) <- c(.5, .45, .4, .55, .6, .5)
cases <- list(
  list(name = "fixture_cov", S = S4, V = V4, r = 40, p = .95, diag = TRUE, fa = TRUE, fm = "minres", nfactors = 1),
  list(name = "fixture_cor", S = cov2cor(S4), V = rand_v(10, .004), r = 30, p = .9, diag = FALSE, fa = TRUE,
       fm = "ml", nfactors = 2),
  list(name = "two_factor", S = S5, V = rand_v(15, .003), r = 50, p = .95, diag = TRUE, fa = FALSE, fm = "minres",
       nfactors = 1),
  list(name = "cov6_uls", S = S6, V = rand_v(21, .002), r = 25, p = .99, diag = TRUE, fa = TRUE, fm = "uls",
       nfactors = 1)
)
pa_out <- list()
for (cs in cases) {
  .draws <- list(); .plots <- list(); .msgs <- character()
  set.seed(4242)
  paLDSC(S = cs$S, V = cs$V, r = cs$r, p = cs$p, diag = cs$diag, fa = cs$fa, fm = cs$fm, nfactors = cs$nfactors)
  pa_out[[cs$name]] <- c(cs, list(draws = do.call(rbind, .draws),
                                  plots = lapply(.plots, function(d) list(eigenvalue = d$eigenvalue, type = d$type)),
                                  messages = .msgs))
}
write(toJSON(pa_out, digits = NA, auto_unbox = TRUE, matrix = "rowmajor"), file.path(out, "paldsc.json"))

# ---- psych::fa values ------------------------------------------------------------------------
fa_out <- list()
mats <- list(cov2cor(S4), S5, cov2cor(S6))
for (i in 1:3) { A <- matrix(rnorm(5 * 5), 5); X <- cov2cor(crossprod(A) + diag(5) * .5); mats[[length(mats) + 1]] <- X }
for (i in seq_along(mats)) for (fm in c("minres", "uls", "wls", "gls", "ml", "pa")) for (nf in 1:2) {
  X <- as.matrix(nearPD(mats[[i]], corr = TRUE)$mat)
  v <- tryCatch(fa(X, fm = fm, nfactors = nf, SMC = FALSE, warnings = FALSE, rotate = "none")$values,
                error = function(e) NULL)
  if (!is.null(v)) fa_out[[length(fa_out) + 1]] <- list(x = X, fm = fm, nfactors = nf, values = v)
}
write(toJSON(fa_out, digits = NA, auto_unbox = TRUE, matrix = "rowmajor"), file.path(out, "fa.json"))

# ---- simLDSC -----------------------------------------------------------------------------------
ld <- file.path(out, "ld"); dir.create(ld, showWarnings = FALSE)
set.seed(7)
for (chr in 1:22) {
  n <- 40
  d <- data.frame(CHR = chr, SNP = sprintf("rs%d%04d", chr, 1:n), BP = sort(sample(1e6, n)),
                  CM = 0, MAF = round(runif(n, .05, .5), 3), L2 = round(rgamma(n, 2, 1 / 30), 3))
  con <- gzfile(file.path(ld, paste0(chr, ".l2.ldscore.gz")), "w")
  write.table(d, con, sep = "\t", quote = FALSE, row.names = FALSE); close(con)
  writeLines(as.character(20000 + chr * 100), file.path(ld, paste0(chr, ".l2.M_5_50")))
}
Nm <- diag(c(75000, 300000, 120000)); Nm[1, 2] <- Nm[2, 1] <- 50000; Nm[1, 3] <- Nm[3, 1] <- 30000
Nm[2, 3] <- Nm[3, 2] <- 100000
rP <- matrix(c(1, .4, .3, .4, 1, .2, .3, .2, 1), 3)
model <- "F1 =~ 1*Pheno1 + 0.5*Pheno2 + 0.7*Pheno3
F1 ~~ 0.1*F1
Pheno1 ~~ 0.02*Pheno1
Pheno2 ~~ 0.01*Pheno2
Pheno3 ~~ 0*Pheno3"
sim_cases <- list(
  list(name = "matrix", covmat = fix_s <- fromJSON(file.path(out, "..", "..", "fixtures", "newer", "simldsc_synth.json"))$s,
       N = Nm, rPheno = rP, int = c(1.02, 1.01, 1.03), N_overlap = .99, r = 2, seed = 11),
  list(name = "model", covmat = model, N = 50000, rPheno = .3, int = NULL, N_overlap = .5, r = 1, seed = 12),
  list(name = "defaults", covmat = fix_s, N = 100000, rPheno = NULL, int = c(1.05, 1, 1.1), N_overlap = .8, r = 1, seed = 13)
)
sim_json <- list()
for (cs in sim_cases) {
  d <- file.path(out, paste0("sim_", cs$name)); dir.create(d, showWarnings = FALSE); old <- setwd(d)
  .draws <- list(); .sigmas <- list(); .keep_sigma <- TRUE
  simLDSC(covmat = cs$covmat, N = cs$N, seed = cs$seed, ld = ld, rPheno = cs$rPheno, int = cs$int,
          N_overlap = cs$N_overlap, r = cs$r)
  .keep_sigma <- FALSE
  load("PopCovMat.RData"); file.remove("PopCovMat.RData")
  write.table(format(as.matrix(covMatrix), digits = 17), "covMatrix.tsv", sep = "\t", quote = FALSE)
  n_snp <- 22 * 40
  sig <- do.call(rbind, lapply(.sigmas[1:n_snp], function(s) c(s)))
  con <- gzfile("sigma.tsv.gz", "w"); write.table(format(sig, digits = 17), con, sep = "\t", quote = FALSE,
                                                  row.names = FALSE, col.names = FALSE); close(con)
  setwd(old)
  sim_json[[cs$name]] <- cs[c("covmat", "N", "rPheno", "int", "N_overlap", "r", "seed")]
}
write(toJSON(sim_json, digits = NA, auto_unbox = TRUE, matrix = "rowmajor", null = "null"),
      file.path(out, "simldsc.json"))
base::cat("done\n")
