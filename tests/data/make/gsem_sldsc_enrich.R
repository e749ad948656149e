# R GenomicSEM's s_ldsc() and enrich() on the synthetic annotated LD scores written by
# tests/data/make/gsem_sldsc_enrich.py.  Usage:
#   Rscript gsem_sldsc_enrich.R <GenomicSEM R/ directory> <data directory>
# The data directory holds annot/, weights/, frq/, T1..T3.sumstats.gz, sldsc_cases.tsv and
# enrich_cases.tsv; outputs written there: sldsc_<case>.txt and enrich_<case>.txt (17 digits).
# GenomicSEM's code is sourced from the given directory (never copied); it needs data.table, plyr,
# gdata, stringr, Matrix and lavaan.
suppressMessages({library(data.table); library(plyr); library(gdata); library(stringr)
  library(Matrix); library(lavaan)})
args <- commandArgs(TRUE); src <- args[1]; d <- args[2]
only <- if (length(args) > 2) args[3] else "all"
for (f in c("utils.R", "s_ldsc.R", "enrich.R")) source(file.path(src, f))
setwd(d)
.num <- function(x) format(as.vector(x), digits = 17)
.put <- function(con, key, x) cat("@@", key, .num(x), "\n", file = con)
.enrich_out <- function(res, file) {
  con <- file(file, "w")
  nres <- length(res) - 1
  for (p in seq_len(nres)) {
    r <- res[[p]]
    cat(paste0("@@ ann.", p), r$Annotation, "\n", file = con)
    cat(paste0("@@ par.", p), paste0(r$lhs, r$op, r$rhs), "\n", file = con)
    .put(con, paste0("cov_smooth.", p), as.numeric(r$Cov_Smooth))
    .put(con, paste0("z_smooth.", p), as.numeric(r$Z_smooth))
    .put(con, paste0("enr.", p), as.numeric(r$Enrichment))
    .put(con, paste0("enr_se.", p), as.numeric(r$Enrichment_SE))
    .put(con, paste0("enr_p.", p), as.numeric(r$Enrichment_p_value))
  }
  b <- res[[length(res)]]
  cat("@@ base_par", paste0(b$lhs, b$op, b$rhs), "\n", file = con)
  .put(con, "base_est", b$est)
  .put(con, "base_se", suppressWarnings(as.numeric(b$SE)))
  cat("@@ base_fixed", b$Fixed_Enrich, "\n", file = con)
  close(con)
}

# a hand-made stratified covstruc (handmade.json): a non positive definite S (nearPD smoothing,
# Cov_Smooth / Z_smooth), an annotation with all heritabilities negative, a non positive definite V
if (only %in% c("all", "handmade")) {
  h <- jsonlite::fromJSON("handmade.json", simplifyVector = FALSE)
  mats <- function(x) lapply(x, function(m) do.call(rbind, lapply(m, unlist)))
  S <- mats(h$S); V <- mats(h$V)
  for (i in seq_along(S)) colnames(S[[i]]) <- unlist(h$trait_names)
  names(S) <- names(V) <- unlist(h$annotations)
  sc <- list(S = S, V = V, S_Tau = S, V_Tau = V, Prop = data.frame(Prop = unlist(h$prop)),
             Select = data.frame(V1 = unlist(h$select_names), V2 = unlist(h$select)))
  .enrich_out(enrich(sc, model = "F1 =~ T1 + T2 + T3", params = "F1~~F1"), "enrich_handmade.txt")
  if (only == "handmade") quit(save = "no")
}

cases <- read.delim("sldsc_cases.tsv", stringsAsFactors = FALSE)
fits <- list()
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  sp <- if (cs$prev) c(0.5, NA, NA) else NULL
  pp <- if (cs$prev) c(0.1, NA, NA) else NULL
  ld <- strsplit(cs$ld, ",")[[1]]
  res <- s_ldsc(traits = c("T1.sumstats.gz", "T2.sumstats.gz", "T3.sumstats.gz"), sample.prev = sp,
                population.prev = pp, ld = ld, wld = "weights/weights.", frq = "frq/1000G.",
                trait.names = c("T1", "T2", "T3"), n.blocks = cs$nb, ldsc.log = paste0("log_", cs$case),
                exclude_cont = cs$exclude_cont)
  fits[[cs$case]] <- res
  con <- file(paste0("sldsc_", cs$case, ".txt"), "w")
  cat("@@ names", names(res$S), "\n", file = con)
  for (a in seq_along(res$S)) {
    .put(con, paste0("S.", a), res$S[[a]]); .put(con, paste0("V.", a), res$V[[a]])
    .put(con, paste0("S_Tau.", a), res$S_Tau[[a]]); .put(con, paste0("V_Tau.", a), res$V_Tau[[a]])
  }
  .put(con, "I", res$I); .put(con, "N", res$N); .put(con, "m", res$m); .put(con, "Prop", res$Prop$Prop)
  cat("@@ Select_names", res$Select$V1, "\n", file = con)
  .put(con, "Select", res$Select$V2)
  close(con)
}

ecases <- read.delim("enrich_cases.tsv", stringsAsFactors = FALSE)
for (i in seq_len(nrow(ecases))) {
  ec <- ecases[i, ]
  res <- enrich(fits[[ec$sldsc]], model = gsub("\\\\n", "\n", ec$model), params = strsplit(ec$params, ",")[[1]],
                fix = ec$fix, std.lv = ec$std_lv, rm_flank = ec$rm_flank, tau = ec$tau, base = TRUE)
  .enrich_out(res, paste0("enrich_", ec$case, ".txt"))
}
