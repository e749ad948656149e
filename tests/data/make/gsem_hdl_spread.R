# How far R GenomicSEM's own hdl() totals move under rounding-level changes of its input or of its
# objective's evaluation order: the spread that bounds any reimplementation's agreement with R.
# Usage: Rscript gsem_hdl_spread.R <GenomicSEM R/ directory> <tests/data/gsem/r/hdl> <output directory>
# For every case of cases.tsv (same panel_r, munged files and arguments as gsem_hdl.R) and variant:
#   base      the stored munged files as they are (must reproduce the stored R outputs bit for bit);
#   z1..z10   every Z multiplied by (1 + 1e-14 u), u ~ U(-1, 1) (set.seed(k)), written at 17 digits;
#   sumorder  the stored files, with hdl.R's two objectives evaluated as one sum,
#             sum(log(v) + b^2 / v), instead of sum(log(v)) + sum(b^2 / v) (the same function);
# writes <output>/spread.tsv.gz: variant, case, what (S, V, I, pieces), row, col, value (17 digits).
suppressMessages({library(readr); library(dplyr); library(stringr); library(gdata)})
args <- commandArgs(TRUE); src <- args[1]; fix <- args[2]; out <- args[3]
dir.create(out, showWarnings = FALSE, recursive = TRUE)
txt0 <- readLines(file.path(src, "hdl.R"))
# as gsem_hdl.R: keep each cell's per-piece fits (HDL11.df / HDL12.df) in the global environment
txt0 <- sub("^(\\s*)s <- s ?\\+ ?1", paste0("\\1assign(paste0('PIECES', s), if (j == d) HDL11.df else HDL12.df, ",
            "envir = globalenv()); s <- s + 1"), txt0)
txt1 <- txt0
a <- grep("ll <- sum(log(lamh2)) + sum(bstar^2/(lamh2))", txt1, fixed = TRUE)
b <- grep("ll <- sum(log(lam22.1)) + sum(ustar^2/(lam22.1))", txt1, fixed = TRUE)
stopifnot(length(a) == 1, length(b) == 1)
txt1[a] <- sub("sum(log(lamh2)) + sum(bstar^2/(lamh2))", "sum(log(lamh2) + bstar^2/(lamh2))", txt1[a], fixed = TRUE)
txt1[b] <- sub("sum(log(lam22.1)) + sum(ustar^2/(lam22.1))", "sum(log(lam22.1) + ustar^2/(lam22.1))", txt1[b],
               fixed = TRUE)
.na <- function(x) if (is.na(x) || x == "NA") NA else as.numeric(strsplit(x, ",")[[1]])
cases <- read.delim(file.path(fix, "cases.tsv"), stringsAsFactors = FALSE)
tmp <- tempfile("hdlspread"); dir.create(tmp)
rows <- list()
put <- function(variant, case, what, m) {
  m <- as.matrix(m)
  rows[[length(rows) + 1]] <<- data.frame(variant = variant, case = case, what = what,
    row = as.vector(row(m)), col = as.vector(col(m)), value = sprintf("%.17g", as.vector(m)))
}
variants <- c("base", paste0("z", 1:10), "sumorder")
for (v in variants) {
  eval(parse(text = if (v == "sumorder") txt1 else txt0), envir = globalenv())
  files <- c("A", "B", "C", "D", "E")
  paths <- setNames(file.path(fix, paste0(files, ".sumstats.gz")), files)
  if (startsWith(v, "z")) {
    set.seed(as.integer(substring(v, 2)))
    for (f in files) {
      d <- read.delim(paths[[f]], stringsAsFactors = FALSE, colClasses = c(SNP = "character"))
      ok <- !is.na(d$Z)
      d$Z[ok] <- d$Z[ok] * (1 + 1e-14 * runif(sum(ok), -1, 1))
      d$N <- sprintf("%.17g", d$N); d$Z <- ifelse(is.na(d$Z), "NA", sprintf("%.17g", d$Z))
      p <- file.path(tmp, paste0(v, "_", f, ".sumstats.gz"))
      con <- gzfile(p, "w"); write.table(d, con, sep = "\t", quote = FALSE, row.names = FALSE); close(con)
      paths[[f]] <- p
    }
  }
  for (r in seq_len(nrow(cases))) {
    cs <- cases[r, ]
    traits <- unname(paths[sub(".sumstats.gz", "", strsplit(cs$files, ",")[[1]], fixed = TRUE)])
    sp <- .na(cs$sample_prev); pp <- .na(cs$population_prev)
    if (length(sp) > 1) sp[sp < 0] <- NA
    if (length(pp) > 1) pp[pp < 0] <- NA
    res <- suppressWarnings(hdl(traits, sample.prev = sp, population.prev = pp,
      trait.names = strsplit(cs$names, ",")[[1]], LD.path = file.path(fix, "panel_r"), Nref = cs$nref,
      method = cs$method))
    put(v, cs$case, "S", res$S); put(v, cs$case, "V", res$V); put(v, cs$case, "I", res$I)
    if (cs$method == "piecewise") {
      k <- length(traits); cells <- NULL
      for (s in seq_len(k * (k + 1) / 2)) cells <- cbind(cells, get(paste0("PIECES", s)))
      put(v, cs$case, "pieces", cells)
    }
  }
}
con <- gzfile(file.path(out, "spread.tsv.gz"), "w")
write.table(do.call(rbind, rows), con, sep = "\t", quote = FALSE, row.names = FALSE)
close(con)
cat(sprintf("R %s, GenomicSEM hdl.R md5 %s\n", R.version.string, tools::md5sum(file.path(src, "hdl.R"))))
