# R GenomicSEM's munge(), sumstats() and ldsc() on the messy synthetic inputs written by
# tests/data/make/gsem_r.py (set "munge_ldsc").  Usage:
#   Rscript gsem_munge_ldsc.R <GenomicSEM R/ directory> <data directory> munge|ldsc
# The data directory holds raw0..2.txt.gz, hm3.snplist.gz, ref.txt.gz, ld/ and, per ldsc case listed in
# ldsc_cases.tsv (nb, prev), the three ldsc input files <trait>.<nb>.sumstats.gz; outputs written
# there: <trait>.sumstats.gz (munge), sumstats_R.tsv (sumstats), ldsc_<nb>.txt (ldsc).
# GenomicSEM's R dependencies (readr, gdata, stringr, data.table, dplyr, R.utils) are not needed:
# the few functions its code calls are replaced by the small base-R stand-ins below (polgen's code).

.open <- function(f) if (grepl("\\.gz$", f)) gzfile(f) else f
.cls <- c(SNP = "character", A1 = "character", A2 = "character")
read_delim <- function(file, delim = "\t", ...)
  read.delim(.open(file), sep = delim, stringsAsFactors = FALSE, check.names = FALSE, colClasses = .cls)
read_csv <- function(file, col_names = FALSE, ...) read.csv(file, header = col_names)
fread <- function(f, header = TRUE, data.table = FALSE, ...)
  read.delim(.open(f), stringsAsFactors = FALSE, check.names = FALSE, colClasses = .cls)
lowerTriangle <- function(x, diag = FALSE) x[lower.tri(x, diag = diag)]
str_detect <- function(s, p) grepl(p, s)
str_replace_all <- function(s, p, r) gsub(p, r, s, fixed = TRUE)
fixed <- function(x) x
str_remove_all <- function(s, p) gsub(p, "", s)
gzip <- function(f, overwrite = TRUE) {
  x <- readLines(f); con <- gzfile(paste0(f, ".gz"), "w"); writeLines(x, con); close(con); file.remove(f)
}
inner_join <- function(x, y, by) merge(x, y, by = by, sort = FALSE)
.src <- function(dir) for (f in c("utils.R", "utils_sanitychecks.R", "ldsc.R", "munge.R", "munge_main.R", "sumstats.R", "sumstats_main.R"))
  eval(parse(text = gsub("gdata::", "", readLines(file.path(dir, f)), fixed = TRUE)), envir = globalenv())
.num <- function(df) { df[] <- lapply(df, function(x) if (is.numeric(x)) format(x, digits = 17) else x); df }

args <- commandArgs(TRUE); src <- args[1]; d <- args[2]; step <- args[3]
.src(src)
setwd(d)
raw <- c("raw0.txt.gz", "raw1.txt.gz", "raw2.txt.gz")
tr <- c("A", "B", "C")
if (step == "munge") {
munge(raw, "hm3.snplist.gz", trait.names = tr)
res <- sumstats(raw, "ref.txt.gz", trait.names = tr, se.logit = c(FALSE, FALSE, TRUE),
                OLS = c(TRUE, FALSE, FALSE), linprob = c(FALSE, TRUE, FALSE))
write.table(.num(res), "sumstats_R.tsv", sep = "\t", quote = FALSE, row.names = FALSE)
} else {
cases <- read.delim("ldsc_cases.tsv", stringsAsFactors = FALSE)
for (i in seq_len(nrow(cases))) {
  nb <- cases$nb[i]
  sp <- if (cases$prev[i]) c(0.5, NA, 0.3) else c(NA, NA, NA)
  pp <- if (cases$prev[i]) c(0.1, NA, 0.02) else c(NA, NA, NA)
  res <- ldsc(paste0(tr, ".", nb, ".sumstats.gz"), sp, pp, "ld/", "ld/", n.blocks = nb, chr = 2,
              stand = TRUE)
  con <- file(paste0("ldsc_", nb, ".txt"), "w")
  for (k in c("S", "V", "I", "N", "S_Stand", "V_Stand"))
    cat("@@", k, format(as.vector(res[[k]]), digits = 17), "\n", file = con)
  close(con)
}
}
