"""user_gwas(fix_measurement=False) on the common-factor model, by commonfactorGWAS's reduced problem.

The user model ``F =~ NA*T_1 + ... + T_k``, ``F ~~ c*F`` (c > 0 fixed), ``F ~ SNP``, ``SNP ~~ SNP``
with free residual variances (and nothing else) is R commonfactorGWAS's model (first loading 1,
factor residual variance ``psi`` free) identified differently.  With ``s = sqrt(psi / c)``:

    lambda'_t = l_t s,   b' = b / s,   theta_t and v unchanged

gives the same implied covariance matrix, hence the same DWLS objective, for every ``psi > 0``;
the user model is the common-factor model restricted to ``psi > 0``.  So:

* the reduced fit runs from the warm start (the no-SNP fit's loading direction, further starts
  only where it fails: :data:`~polgen.gsem.gwas_starts.CFU_TRIGGER`); where its minimum has
  ``psi > 0`` it is a minimum of the user model and maps to the user's parameters exactly.  R's
  lavaan, started from the same direction, ends in that basin too: on the 130 of 20,000 bench
  SNPs where the warm start's minimum is not the lowest one found from further starts, R is at
  the warm start's on 105 and at the lowest on 24 (tests/gsem/test_gwas_cfuser_r.py);
* where it has ``psi <= 0`` the user model's objective has no minimum along that basin (the fit
  runs off: ``b' -> infinity``, ``lambda' -> 0``), and the user model's solution, if any, is a
  local minimum of the reduced problem with ``psi > 0``:
  :func:`polgen.kernels.commonfactor_feasible.cfu_feasible_fit` fits from the local minima of the
  scores of ~500 fixed loading directions (and the best ones) with ``psi > 0`` and keeps the
  lowest such minimum; none -> ``ST_NOFINITE`` ("no finite optimum"), as the general fit reports
  run-offs.

On 20,000 bench SNPs (issue 18) this converges on 17,747 SNPs, the general multi-start fit on
17,727: 1 SNP converged there only (R's lavaan does not converge on it), 20 here only.  Of 29 SNPs
whose status differed between the two, R converges on 14; this route converges on all 14, at R's
estimates (tests/gsem/test_gwas_cfuser_r.py).  It runs ~4x cheaper than the general fit.
SEs, chi-square, smoothing flags, Q_SNP and ``Z_smooth`` come from one call of the general
kernel evaluated at the mapped estimates (``max_iter=0``) over the whole batch; SNPs the reduced
problem rejects for other reasons (input, nearPD, singular) are then refit by the general fit.
"""

from __future__ import annotations

import numpy as np

from polgen.gsem.gwas_commonfactor import CF_LM_RUNS
from polgen.gsem.gwas_starts import CFU_MAX_ITER, CFU_TOP, CFU_TRIGGER, cfu_structure
from polgen.kernels import _precompile

__all__ = [
    "cfu_structure",
    "cfu_stage1",
    "psi_positive_search",
]  # cfu_structure: polgen.gsem.gwas_starts (the plan builds it)


def cfu_stage1(plan, beta, se, var, run_stage) -> dict:
    """Stage 1 of user_gwas for a plan with ``stage1.cfu`` (:func:`cfu_structure`): the same
    result dict as :func:`polgen.gsem.gwas_batch.run_stage`."""
    from polgen.kernels.gwas import commonfactor_fit
    from polgen.kernels.gwas_codes import ST_NOCONV, ST_NOFINITE, ST_OK

    st = plan.stage1
    cfu = st.cfu
    k = len(plan.traits)
    n = beta.shape[0]
    npc = 2 * k + 2  # the reduced chart's table: l_2..l_k, b, theta_1..theta_k, psi, v
    cidx = np.arange(npc, dtype=np.int64)
    ip = 2 * k  # psi's column
    starts = cfu["starts"]
    q = plan.q_ptr is not None
    if n == 0:
        return run_stage(plan, st, beta, se, var, q=q)
    ld: tuple[np.ndarray, np.ndarray, np.ndarray, int, float, bool] = plan.ld_args()
    # a first call compiles the reduced fit here and the general kernel in a helper meanwhile
    with _precompile.plans(_precompile.PLANS_CFU):
        th, _, status, _ = commonfactor_fit(
            beta, se, var, *ld, starts, cidx, npc, n_always=CF_LM_RUNS, trigger=CFU_TRIGGER
        )

    with np.errstate(invalid="ignore"):
        feas = (status == ST_OK) & (th[:, ip] > 0.0)
    # lowest minimum outside the user model (psi <= 0) or none: its lowest minimum with psi > 0
    redo = np.flatnonzero(~feas & np.isin(status, (ST_OK, ST_NOCONV, ST_NOFINITE)))
    nofinite = np.empty(0, np.int64)
    if redo.size:
        t2, s2 = psi_positive_search(plan, beta[redo], se[redo], var[redo])
        found = s2 == ST_OK
        th[redo[found]] = t2[found]
        feas[redo[found]] = True
        nofinite = redo[~found]
    # one SE step (the general kernel at max_iter=0) over every SNP at the user's parameters of
    # the reduced fit's solution (the warm start where it has none: the smoothing flags of a
    # SNP without a finite optimum stand); the SNPs the reduced problem rejects for another
    # reason (input, nearPD, singular) are then refit by the general fit
    npar = st.starts.shape[1]
    theta = np.empty((n, npar))
    theta[:] = st.starts[0]
    rows = np.flatnonzero(feas)
    if rows.size:
        pidx = cfu["pidx"]
        s = np.sqrt(th[rows, ip] / cfu["c"])
        theta[rows, pidx[0]] = s  # lambda'_1 = s (l_1 = 1)
        for t in range(1, k):
            theta[rows, pidx[t]] = th[rows, t - 1] * s
        theta[rows, pidx[k]] = th[rows, k - 1] / s  # b' = b / s
        theta[rows, pidx[k + 1]] = th[rows, ip + 1]  # v
        for t in range(k):
            theta[rows, pidx[k + 2 + t]] = th[rows, k + t]  # theta_t
    out = run_stage(plan, st, beta, se, var, theta0=theta, q=q, max_iter=0)
    if nofinite.size:
        for key, arr in out.items():
            if key == "status":
                arr[nofinite] = ST_NOFINITE
            elif arr.dtype.kind == "f":
                arr[nofinite] = np.nan
    general = np.flatnonzero(~feas)
    if nofinite.size:
        general = np.setdiff1d(general, nofinite, assume_unique=True)
    if general.size:
        res = run_stage(plan, st, beta[general], se[general], var[general], q=q)
        for key, arr in res.items():
            out[key][general] = arr
    return out


def psi_positive_search(plan, beta, se, var) -> tuple[np.ndarray, np.ndarray]:
    """The lowest minimum with ``psi > 0`` of the reduced problem for each SNP
    (:func:`polgen.kernels.commonfactor_feasible.cfu_feasible_fit` with the plan's directions):
    (estimates in the reduced chart's table, status: ``ST_OK`` or ``ST_NOFINITE`` / an input code)."""
    from polgen.kernels.commonfactor_feasible import cfu_feasible_fit

    cfu = plan.stage1.cfu
    npc = 2 * len(plan.traits) + 2
    ld: tuple[np.ndarray, np.ndarray, np.ndarray, int, float, bool] = plan.ld_args()
    th, _, status, _ = cfu_feasible_fit(
        beta, se, var, *ld, cfu["dirs"], cfu["nbr"], CFU_TOP, np.arange(npc, dtype=np.int64), npc,
        max_iter=CFU_MAX_ITER,
    )  # fmt: skip
    return th, status
