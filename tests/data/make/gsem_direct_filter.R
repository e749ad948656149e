# R GenomicSEM's sumstats() with direct.filter = TRUE on the inputs written by
# tests/data/make/gsem_direct_filter.py.  Usage:
#   Rscript gsem_direct_filter.R <GenomicSEM R/ directory> <data directory>
# Reads dir0.txt.gz, dir1.txt.gz (with a DIRECTION column) and ref.txt.gz, writes sumstats_R.tsv
# (direct.filter = TRUE) and sumstats_R_nofilter.tsv (FALSE).  GenomicSEM's readr / gdata / dplyr
# calls are replaced by base-R stand-ins (polgen's code); stringr is used as GenomicSEM does.
suppressMessages(library(stringr))
.open <- function(f) if (grepl("\\.gz$", f)) gzfile(f) else f
.cls <- c(SNP = "character", A1 = "character", A2 = "character", DIRECTION = "character")
read_delim <- function(file, delim = "\t", ...)
  read.delim(.open(file), sep = delim, stringsAsFactors = FALSE, check.names = FALSE, colClasses = .cls)
fread <- function(f, header = TRUE, data.table = FALSE, ...)
  read.delim(.open(f), stringsAsFactors = FALSE, check.names = FALSE, colClasses = .cls)
inner_join <- function(x, y, by) merge(x, y, by = by, sort = FALSE)
.src <- function(dir) for (f in c("utils.R", "utils_sanitychecks.R", "sumstats.R", "sumstats_main.R"))
  eval(parse(text = gsub("gdata::", "", readLines(file.path(dir, f)), fixed = TRUE)), envir = globalenv())
.num <- function(df) { df[] <- lapply(df, function(x) if (is.numeric(x)) format(x, digits = 17) else x); df }
args <- commandArgs(TRUE); src <- args[1]; d <- args[2]
.src(src)
setwd(d)
for (flt in c(TRUE, FALSE)) {
  res <- sumstats(c("dir0.txt.gz", "dir1.txt.gz"), "ref.txt.gz", trait.names = c("A", "B"),
                  se.logit = c(FALSE, FALSE), direct.filter = flt)
  write.table(.num(res), if (flt) "sumstats_R.tsv" else "sumstats_R_nofilter.tsv", sep = "\t",
              quote = FALSE, row.names = FALSE)
}
