# R GenomicSEM's hdl() on the synthetic HDL panel and munged files written by tests/data/make/gsem_hdl.py.
# Usage: Rscript gsem_hdl.R <GenomicSEM R/ directory> <dump directory> <output directory>
# 1. Writes the panel in R's LD.path layout with save() (per piece ukb_chr{c}.{p}_n336000_500banded_99eigen.rda
#    holding LDsc, lam, V, and ukb_chr{c}.{p}_n336000.bim; UKB_snp_counter_array.RData with nsnps.list;
#    UKB_snp_list_array.RData with snps.name.list) from the full-precision text dumps of the driver.
# 2. Sources hdl.R from GenomicSEM (its dependencies readr, dplyr, stringr, gdata are installed) and runs
#    hdl() for each case of <output>/cases.tsv, writing S, V, I at 17 significant digits.
suppressMessages({library(readr); library(dplyr); library(stringr); library(gdata)})
args <- commandArgs(TRUE); src <- args[1]; dump <- args[2]; out <- args[3]
pieces <- read.delim(file.path(dump, "pieces.tsv"), stringsAsFactors = FALSE)
pan <- file.path(out, "panel_r"); dir.create(pan, showWarnings = FALSE)
nsnps.list <- vector("list", 22)
for (c in 1:22) nsnps.list[[c]] <- numeric(0)
for (r in seq_len(nrow(pieces))) {
  c <- pieces$chr[r]; p <- pieces$piece[r]
  tab <- read.delim(file.path(dump, sprintf("chr%d.%d.tsv", c, p)), stringsAsFactors = FALSE,
                    colClasses = c(SNP = "character", A1 = "character", A2 = "character"))
  lam <- scan(file.path(dump, sprintf("chr%d.%d.lam", c, p)), quiet = TRUE)
  LDsc <- tab$LDsc
  V <- as.matrix(tab[, grep("^E[0-9]+$", names(tab))]); dimnames(V) <- NULL
  save(LDsc, lam, V, file = file.path(pan, sprintf("ukb_chr%d.%d_n336000_500banded_99eigen.rda", c, p)))
  write.table(data.frame(c, tab$SNP, 0, tab$BP, tab$A1, tab$A2),
              file.path(pan, sprintf("ukb_chr%d.%d_n336000.bim", c, p)), sep = "\t", quote = FALSE,
              row.names = FALSE, col.names = FALSE)
  nsnps.list[[c]] <- c(nsnps.list[[c]], nrow(tab))
}
snps.name.list <- readLines(file.path(dump, "snp_list.txt"))
save(nsnps.list, file = file.path(pan, "UKB_snp_counter_array.RData"))
save(snps.name.list, file = file.path(pan, "UKB_snp_list_array.RData"))

# hdl.R is sourced unchanged except one added line per cell that keeps the per-piece estimates
# (HDL11.df / HDL12.df) in the global environment, for the per-piece comparisons of the tests.
txt <- readLines(file.path(src, "hdl.R"))
txt <- sub("^(\\s*)s <- s ?\\+ ?1", paste0("\\1assign(paste0('PIECES', s), if (j == d) HDL11.df else HDL12.df, ",
           "envir = globalenv()); s <- s + 1"), txt)
eval(parse(text = txt), envir = globalenv())
.na <- function(x) if (is.na(x) || x == "NA") NA else as.numeric(strsplit(x, ",")[[1]])
.w <- function(m, f) write.table(format(m, digits = 17), file.path(out, f), sep = "\t", quote = FALSE,
                                 row.names = FALSE, col.names = FALSE)
cases <- read.delim(file.path(out, "cases.tsv"), stringsAsFactors = FALSE)
for (r in seq_len(nrow(cases))) {
  cs <- cases[r, ]
  traits <- file.path(out, strsplit(cs$files, ",")[[1]])
  sp <- .na(cs$sample_prev); pp <- .na(cs$population_prev)
  if (length(sp) > 1) sp[sp < 0] <- NA
  if (length(pp) > 1) pp[pp < 0] <- NA
  res <- hdl(traits, sample.prev = sp, population.prev = pp, trait.names = strsplit(cs$names, ",")[[1]],
             LD.path = pan, Nref = cs$nref, method = cs$method)
  .w(res$S, paste0(cs$case, "_S.tsv")); .w(res$V, paste0(cs$case, "_V.tsv")); .w(res$I, paste0(cs$case, "_I.tsv"))
  if (cs$method == "piecewise") {
    k <- length(traits); cells <- NULL
    for (s in seq_len(k * (k + 1) / 2)) cells <- cbind(cells, get(paste0("PIECES", s)))
    .w(cells, paste0(cs$case, "_pieces.tsv"))  # per cell of vech(S): estimate, intercept per piece
  }
}

# 3. R optim(method = "L-BFGS-B") alone, as hdl() calls it, on 20 random HDL heritability likelihoods
#    (hdl.R's llfun); inputs and R's start, par, value, counts and convergence for the optimiser test.
opt.dir <- file.path(out, "optim"); dir.create(opt.dir, showWarnings = FALSE)
first <- grep("^llfun <-", txt)  # llfun is local to hdl(): evaluate its definition from the source text
for (k in 1:40) if (!inherits(try(parse(text = txt[first:(first + k)]), silent = TRUE), "try-error")) break
eval(parse(text = txt[first:(first + k)]), envir = globalenv())
set.seed(1)
res <- NULL
for (r in 1:20) {
  lam <- sort(rexp(30, 0.3), decreasing = TRUE); M <- 60; N <- 20000
  bstar <- rnorm(30) * sqrt(0.02 / M * lam^2 + lam / N)
  write.table(data.frame(lam = format(lam, digits = 17), b = format(bstar, digits = 17)),
              file.path(opt.dir, sprintf("problem%d.tsv", r)), sep = "\t", quote = FALSE, row.names = FALSE)
  st <- runif(1, -0.1, 0.2)
  opt <- optim(c(st, 1), llfun, N = N, Nref = 335265, lam = lam, bstar = bstar, M = M, lim = exp(-18),
               method = "L-BFGS-B", lower = c(0, 0), upper = c(1, 10))
  res <- rbind(res, c(st, opt$par, opt$value, opt$counts, opt$convergence))
}
.w(res, file.path("optim", "optim_R.tsv"))
