# R GenomicSEM's summaryGLS, summaryGLSbands, subSV, indexS, read_fusion, QTrait and localSRMD run on
# the inputs that tests/data/make/gsem_gls_tools.py wrote.  Usage:
#   Rscript gsem_gls_tools.R <GenomicSEM R/ dir> <dir with inputs.json>     (writes <dir>/r_out.json)
# GenomicSEM's R sources are sourced from the directory given (they are not part of polgen).  QTrait
# library()s GenomicSEM, ggrepel, corrplot and calls ggpubr::ggarrange (drawing only): empty stand-in
# packages of those names are installed into a temporary library first (polgen's code, below).
suppressMessages({library(jsonlite); library(lavaan); library(Matrix); library(gdata); library(stringr); library(ggplot2)})
options(digits = 17, warn = 1)
args <- commandArgs(trailingOnly = TRUE)
src <- args[1]; dir <- normalizePath(args[2])
inp <- fromJSON(file.path(dir, "inputs.json"), simplifyVector = TRUE)

# -- stand-in packages ----------------------------------------------------------------------------
lib <- file.path(tempdir(), "standin_lib"); dir.create(lib, showWarnings = FALSE)
standin <- function(pkg, code = "", exports = character()) {
  d <- file.path(tempdir(), "standin_src", pkg); dir.create(file.path(d, "R"), recursive = TRUE, showWarnings = FALSE)
  writeLines(c(paste("Package:", pkg), "Version: 0.0.0", "Title: stand-in", "Description: stand-in.",
               "License: GPL-3", "Author: polgen", "Maintainer: polgen <polgen@example.org>"), file.path(d, "DESCRIPTION"))
  writeLines(if (length(exports)) paste0("export(", exports, ")") else "", file.path(d, "NAMESPACE"))
  writeLines(if (nzchar(code)) code else "standin_ <- NULL", file.path(d, "R", "code.R"))
  system2(file.path(R.home("bin"), "R"), c("CMD", "INSTALL", "--no-test-load", "-l", shQuote(lib), shQuote(d)),
          stdout = FALSE, stderr = FALSE)
}
for (p in c("GenomicSEM", "ggrepel", "corrplot")) if (!requireNamespace(p, quietly = TRUE, lib.loc = lib)) standin(p)
if (!requireNamespace("ggpubr", quietly = TRUE, lib.loc = lib))
  standin("ggpubr", "ggarrange <- function(...) NULL", "ggarrange")
.libPaths(c(lib, .libPaths()))

for (f in c("utils.R", "usermodel.R", "summaryGLS.R", "summaryGLSbands.R", "subSV.R", "indexS.R",
            "read_fusion.R", "qtrait.r", "localSRMD.R")) source(file.path(src, f))

# summaryGLS / summaryGLSbands print their coefficient table: keep the last one printed
.gls_table <- NULL
print <- function(x, ...) {
  if (is.matrix(x) && identical(colnames(x), c("betas", "pvals", "SE", "Z"))) .gls_table <<- x
  base::print(x, ...)
}
tab <- function(m) list(betas = unname(m[, "betas"]), se = unname(m[, "SE"]), z = unname(m[, "Z"]),
                        p = unname(m[, "pvals"]), terms = rownames(m))
out <- list()

# -- summaryGLS -----------------------------------------------------------------------------------
g <- inp$gls; y <- g$y; V <- g$V; x <- g$x
gls <- list()
gls$linear <- tab(summaryGLS(Y = y, V_Y = V, PREDICTORS = x))
gls$no_intercept <- tab(summaryGLS(Y = y, V_Y = V, PREDICTORS = x, INTERCEPT = FALSE))
gls$two_predictors <- tab(summaryGLS(Y = y, V_Y = V, PREDICTORS = cbind(x, g$x2)))
gls$object <- tab(summaryGLS(OBJECT = list(V, y), PREDICTORS = x))
out$summary_gls <- gls

# -- summaryGLSbands (OBJECT form: with Y/V_Y, R's band loop sets Ohm <- Y and fails) -------------
bands <- list()
band_case <- function(...) {
  p <- summaryGLSbands(OBJECT = list(V, y), PREDICTORS = x, ...)
  dat <- NULL
  for (l in p$layers) if (is.data.frame(l$data) && "SEss" %in% names(l$data)) dat <- l$data
  c(tab(.gls_table), list(x = dat$Predictors, upper = dat$SEss, lower = dat$SEs))
}
bands$linear <- band_case(INTERVALS = 20)
bands$quad <- band_case(INTERVALS = 9, QUAD = TRUE, BAND_SIZE = 1.96)
bands$controls <- band_case(INTERVALS = 6, CONTROLVARS = g$controls)
bands$quad_controls <- band_case(INTERVALS = 7, QUAD = TRUE, CONTROLVARS = g$controls[, 1], BAND_SIZE = 2)
out$summary_gls_bands <- bands

# -- subSV / indexS -------------------------------------------------------------------------------
s <- inp$subsv
sv <- list()
r1 <- subSV(LDSC_OBJECT = list(S = s$S, V = s$V), INDEXVALS = s$index_s, TYPE = "S")
sv$S <- list(sub_s = r1$subS, sub_v = r1$subV)
r2 <- subSV(LDSC_OBJECT = list(S_Stand = s$S_Stand, V_Stand = s$V_Stand), INDEXVALS = s$index_s, TYPE = "S_Stand")
sv$S_Stand <- list(sub_s = r2$subS, sub_v = r2$subV)
r3 <- subSV(LDSC_OBJECT = list(R = s$R, V_R = s$V_R), INDEXVALS = s$index_r, TYPE = "R")
sv$R <- list(sub_s = r3$subS, sub_v = r3$subV)
sv$index_s <- indexS(LDSC_OBJECT = list(S = s$S))
sv$index_r <- indexS(MATRIX = s$S, R = TRUE)
out$subsv <- sv

# -- read_fusion ----------------------------------------------------------------------------------
fu <- inp$fusion
files <- file.path(dir, fu$files)
frame <- function(d) { d <- as.data.frame(d); rownames(d) <- NULL; as.list(d) }
fr <- list()
fr$default <- frame(read_fusion(files, trait.names = fu$trait_names, binary = fu$binary, N = fu$N))
fr$perm <- frame(read_fusion(files, trait.names = fu$trait_names, binary = fu$binary, N = fu$N, perm = TRUE))
fr$one_continuous <- frame(read_fusion(files[2], trait.names = "B", binary = FALSE, N = fu$N[2]))
out$read_fusion <- fr

# -- QTrait (run in a scratch directory: it sink()s to a file "NUL") ----------------------------
q <- inp$qtrait
cov <- list(V = q$V, S = q$S, I = q$I, N = q$N, m = q$m, V_Stand = q$V_Stand, S_Stand = q$S_Stand)  # ldsc()'s order
colnames(cov$S) <- colnames(cov$S_Stand) <- colnames(cov$I) <- q$trait_names
old <- setwd(tempdir())
Q <- QTrait(cov, indicators = q$indicators, traits = q$traits, save.plots = FALSE)
out$qtrait <- c(list(trait = rownames(Q)), as.list(Q))
# the same with lavaan's optimiser run to convergence (nlminb rel.tol 1e-14 beside usermodel's
# optim.dx.tol = 0.01): R's default fits stop ~1e-6 (relative) short of the optimum
usermodel_default <- usermodel
usermodel <- eval(parse(text = gsub("optim.dx.tol = 0.01", "optim.dx.tol = 0.01, control = list(rel.tol = 1e-14)",
                                    deparse(usermodel_default), fixed = TRUE)))
Q <- QTrait(cov, indicators = q$indicators, traits = q$traits, save.plots = FALSE)
out$qtrait_converged <- c(list(trait = rownames(Q)), as.list(Q))
usermodel <- usermodel_default
setwd(old)

# -- localSRMD ------------------------------------------------------------------------------------
m <- inp$srmd
lhs <- lapply(seq_len(nrow(m$lhsvar)), function(i) m$lhsvar[i, ])
rhs <- lapply(seq_len(nrow(m$rhsvar)), function(i) m$rhsvar[i, ])
u <- m$unconstrained; u[is.null(u)] <- NA
out$local_srmd <- localSRMD(as.numeric(u), m$constrained, lhs, rhs)

write_json(out, file.path(dir, "r_out.json"), digits = NA, auto_unbox = TRUE, na = "null", pretty = TRUE)
cat("wrote", file.path(dir, "r_out.json"), "\n")
