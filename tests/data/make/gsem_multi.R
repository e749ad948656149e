# R GenomicSEM addSNPs / addGenes / multiSNP / multiGene, and usermodel on the multiSNP / multiGene
# output, on the inputs written by tests/data/make/gsem_multi.py.  Usage:
#   Rscript gsem_multi.R <GenomicSEM R/ directory> <data directory>
# reads inputs.json from the data directory and writes outputs.json there.  GenomicSEM's own R
# sources are sourced from the directory given (they are not part of polgen).

suppressMessages({library(lavaan); library(Matrix); library(jsonlite); library(dplyr)
                  library(stringr); library(gdata)})
args <- commandArgs(TRUE); src <- args[1]; d <- args[2]
for (f in c("utils.R", "utils_sanitychecks.R", "addSNPs.R", "addGenes.R", "multiSNP.R", "usermodel.R"))
  source(file.path(src, f))
# multiGene.R at this commit fills its cross-trait within-gene block into `V_SNP`, a name it never
# defines (a leftover of multiSNP; the call stops with "object 'V_SNP' not found"): source it with
# that one name read as the `V_Gene` it builds, nothing else changed.
eval(parse(text = gsub("V_SNP[y,x]", "V_Gene[y,x]", readLines(file.path(src, "multiGene.R")), fixed = TRUE)))
inp <- fromJSON(file.path(d, "inputs.json"), simplifyVector = TRUE, simplifyMatrix = TRUE)

cov_of <- function(c) {
  S <- as.matrix(c$S); colnames(S) <- c$traits
  list(V = as.matrix(c$V), S = S, I = as.matrix(c$I))
}
frame_of <- function(x) as.data.frame(x, stringsAsFactors = FALSE, check.names = FALSE)
quiet <- function(expr) { r <- NULL; capture.output(r <- suppressWarnings(expr)); r }
out <- list()

for (cs in split(inp$add_cases, seq_len(nrow(inp$add_cases)))) {
  cv <- cov_of(inp$covstruc[[cs$covstruc]])
  if (cs$kind == "snps") {
    snpse <- if (is.na(cs$SNPSE)) FALSE else cs$SNPSE
    r <- quiet(addSNPs(cv, frame_of(inp$snps), SNPSE = snpse, GC = cs$GC))
  } else {
    r <- quiet(addGenes(cv, frame_of(inp$genes), GC = cs$GC))
  }
  out[[cs$case]] <- list(S_full = lapply(r$S_Full, unname), V_full = lapply(r$V_Full, unname))
}

for (cs in split(inp$multi_cases, seq_len(nrow(inp$multi_cases)))) {
  cv <- cov_of(inp$covstruc[[cs$covstruc]])
  LD <- as.matrix(inp$ld[[cs$ld]]$matrix); rownames(LD) <- colnames(LD) <- inp$ld[[cs$ld]]$names
  rows <- inp$multi_rows[[cs$case]]; tr <- inp$covstruc[[cs$covstruc]]$traits
  keep <- function(x) x[, !grepl("^(beta|se)\\.", colnames(x)) | sub("^(beta|se)\\.", "", colnames(x)) %in% tr]
  if (cs$kind == "snps") {
    x <- keep(frame_of(inp$snps))[rows, ]
    r <- quiet(multiSNP(cv, x, LD))
  } else {
    x <- keep(frame_of(inp$genes))[rows, ]
    r <- quiet(multiGene(cv, x, LD))
  }
  res <- list(S_full = unname(r$S_Full), V_full = unname(r$V_Full), names = colnames(r$S_Full))
  if (!is.na(cs$model)) {
    for (est in c("DWLS", "ML")) {
      fit <- NULL
      txt <- capture.output(fit <- suppressWarnings(usermodel(list(r$V_Full, r$S_Full), estimation = est,
                                                              model = cs$model)))
      if (is.null(fit)) {
        # usermodel returns NULL when its standardized model fails to converge; it has printed
        # the unstandardized estimates and SEs (9 decimals): keep those
        h <- grep("Unstandardized_Estimate", txt, fixed = TRUE)
        p <- read.table(text = txt[h:length(txt)], header = TRUE, stringsAsFactors = FALSE)
        res[[est]] <- list(lhs = p$lhs, op = p$op, rhs = p$rhs, est = p$Unstandardized_Estimate,
                           se = p$SE, chisq = NA, df = NA, printed = TRUE)
      } else {
        p <- fit$results
        res[[est]] <- list(lhs = p$lhs, op = p$op, rhs = p$rhs, est = as.numeric(p$Unstand_Est),
                           se = suppressWarnings(as.numeric(p$Unstand_SE)),
                           chisq = as.numeric(fit$modelfit$chisq), df = as.numeric(fit$modelfit$df))
      }
    }
  }
  out[[cs$case]] <- res
}
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE), file.path(d, "outputs.json"))
