# R's p.adjust(method = "BH") and qvalue::qvalue (Storey) on the LFMM p-values written by
# tests/data/make/lfmm_fdr.py.  Needs R's stats (base) and the qvalue package (Debian
# r-bioc-qvalue).  Usage:  Rscript lfmm_fdr.R <directory>   (reads p.csv, writes q.csv.gz, pi0.csv)
d <- commandArgs(TRUE)[1]
suppressMessages(library(qvalue))
P <- read.csv(file.path(d, "p.csv"))
out <- list(); pi0 <- list()
for (col in names(P)) {
  p <- P[[col]]
  out[[paste0(col, "_BH")]] <- p.adjust(p, method = "BH")
  s <- qvalue(p)
  out[[paste0(col, "_smoother")]] <- s$qvalues; pi0[[paste0(col, "_smoother")]] <- s$pi0
  b <- qvalue(p, pi0.method = "bootstrap")
  out[[paste0(col, "_bootstrap")]] <- b$qvalues; pi0[[paste0(col, "_bootstrap")]] <- b$pi0
  h <- qvalue(p, lambda = 0.5)
  out[[paste0(col, "_lambda05")]] <- h$qvalues; pi0[[paste0(col, "_lambda05")]] <- h$pi0
  g <- qvalue(p, lambda = seq(0.1, 0.8, 0.1), smooth.df = 4)
  out[[paste0(col, "_grid_df4")]] <- g$qvalues; pi0[[paste0(col, "_grid_df4")]] <- g$pi0
  pi0[[paste0(col, "_smoother_df")]] <- smooth.spline(s$lambda, s$pi0.lambda, df = 3)$df
}
f <- function(x) ifelse(is.na(x), "NA", sprintf("%.17g", x))
gz <- gzfile(file.path(d, "q.csv.gz"), "w")
write.csv(as.data.frame(lapply(out, f)), gz, row.names = FALSE, quote = FALSE)
close(gz)
write.csv(data.frame(name = names(pi0), value = f(unlist(pi0))), file.path(d, "pi0.csv"), row.names = FALSE,
          quote = FALSE)
writeLines(c(R.version.string, paste("qvalue", packageVersion("qvalue"))), file.path(d, "R_VERSION.txt"))
