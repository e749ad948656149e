"""Out-of-core LFMM2 (latent factor mixed models, Caye et al. 2019; parity: R LEA ``lfmm2``).

>>> model = polgen.lfmm.fit(env, "geno.bed", K=5, est_rate=0.05)
>>> res = polgen.lfmm.test(model, "geno.bed", out="results/")
>>> res.gif, res.frame.filter(pl.col("P_CALIBRATED") < 1e-8).collect()

or, on the covariate frame (``IID`` + numeric columns): ``env.lfmm.fit("geno.bed", K=5)``.

Also: ``fdr`` (q-values: R ``p.adjust`` BH, R qvalue), ``genetic_offset`` / ``genetic_gap`` (R LEA),
and the lfmm R package's ``glm_test``, ``lfmm_lasso`` and ``lfmm_ridge_cv``.
"""

from polgen.lfmm import namespace as _namespace  # noqa: F401  (registers df.lfmm)
from polgen.lfmm.assoc import LfmmTestResult, test
from polgen.lfmm.choosek import ChooseKResult, choose_k, tracy_widom_sf
from polgen.lfmm.cv import lfmm_ridge_cv
from polgen.lfmm.fit import fit
from polgen.lfmm.glm import glm_test
from polgen.lfmm.lasso import LassoResult, lfmm_lasso
from polgen.lfmm.model import LfmmConvergence, LfmmConvergenceWarning, LfmmModel, load_model
from polgen.lfmm.multitest import FdrResult, Pi0, fdr, p_adjust_bh, pi0_estimate, qvalues
from polgen.lfmm.offset import GeneticOffsetResult, genetic_gap, genetic_offset, write_offset

__all__ = [
    "fit",
    "test",
    "choose_k",
    "LfmmModel",
    "LfmmConvergence",
    "LfmmConvergenceWarning",
    "LfmmTestResult",
    "ChooseKResult",
    "load_model",
    "tracy_widom_sf",
    "genetic_offset",
    "genetic_gap",
    "write_offset",
    "GeneticOffsetResult",
    "fdr",
    "qvalues",
    "p_adjust_bh",
    "pi0_estimate",
    "FdrResult",
    "Pi0",
    "glm_test",
    "lfmm_lasso",
    "LassoResult",
    "lfmm_ridge_cv",
]
