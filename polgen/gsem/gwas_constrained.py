"""Genomic SEM GWAS under general constraints on per-SNP parameters (``b1 == 2*b2``, ``b1 > b2``,
``b1 == b2^2``, ``b1 * b2 > 0.001``): the constrained per-SNP estimates (linear constraints in the
kernel :func:`polgen.kernels.gwas_constrained.constrained_batch`, non-linear ones by sequential
linearisation over it), then chi-square, Q_SNP and sandwich SEs of the batch kernel at them."""

from __future__ import annotations

from typing import Any

import numpy as np

from polgen.gsem.expr import evaluate_array
from polgen.gsem.gwas_plan import Plan, Stage

__all__ = ["NL_MAX_ROUNDS", "constrained_stage"]


def constrained_stage(plan: Plan, beta, se, var, run_stage) -> dict:
    """Linear constraints on parameters estimated per SNP (``b1 == 2*b2``, ``b1 > b2``; bounds
    joined to them): the constrained estimates of :func:`polgen.kernels.gwas_constrained.
    constrained_batch`, then chi-square, Q_SNP and the sandwich SEs of the batch kernel at them
    (``max_iter=0``), as R's userGWAS evaluates its sandwich (lavaan's delta and WLS.V, all free
    parameters) at lavaan's constrained estimates.  The fit starts from the stage's first start
    only (lavaan's: loadings positive): a constraint tying a factor's SNP effect to another's
    (b1 == 2*b2) makes the factor's mirror image a different solution, sometimes of lower
    objective, which R (lavaan from its starting values) does not report.  ``run_stage`` is
    :func:`polgen.gsem.gwas_batch.run_stage` (passed in: the batch module imports this one)."""
    from polgen.kernels.gwas import ST_OK
    from polgen.kernels.gwas_constrained import constrained_batch
    from polgen.kernels.ram import ram_layout
    from polgen.kernels.snp_moments import snp_batch

    assert plan.lincon is not None
    stage = plan.stage1
    lay = ram_layout(stage.model)
    if plan.nlcon:
        est, status, fmin = _nonlinear_fit(plan, lay, beta, se, var)
    else:
        snp = snp_batch(beta, se, var, *plan.ld_args())
        est, status, fmin = constrained_batch(snp, lay, stage.starts[:1], stage.snpvar_par, *plan.lincon, ml=plan.ml)
    # evaluated where the constrained fit ended (SNP ~~ SNP included: not reset to S_full[0, 0])
    at = Stage(stage.model, stage.fidx, stage.starts, -1, stage.wald_idx)
    res = run_stage(plan, at, beta, se, var, theta0=np.nan_to_num(est), q=plan.q_ptr is not None, max_iter=0)
    bad = status != ST_OK
    res["status"][bad] = status[bad]
    res["est"][bad] = np.nan
    res["se"][bad] = np.nan
    res["fmin"] = fmin
    return res


NL_MAX_ROUNDS = 100  # linearisations of the non-linear constraints per SNP


def _label_env(plan: Plan, est: np.ndarray, step_par: int = -1, h: float = 0.0) -> dict:
    """label and ':=' name -> column over SNPs at the estimates ``est`` (parameter ``step_par``
    shifted by ``1j * h``: complex step)."""
    n = est.shape[0]
    env: dict[str, Any] = {}
    for lab, (par, val) in plan.label_src.items():
        if par >= 0:
            env[lab] = est[:, par] + 1j * h if par == step_par else est[:, par]
        else:
            env[lab] = np.full(n, val)
    for name, expr in plan.defined:
        env[name] = np.broadcast_to(np.asarray(evaluate_array(expr, env)), (n,))
    return env


def _nl_linearised(plan: Plan, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals ``c`` (n x m, ``lhs - rhs``) of the non-linear constraints at ``est`` and their
    Jacobians ``G`` (n x m x npar) by complex step, as lavaan's constraint Jacobian."""
    n, npar = est.shape
    m = len(plan.nlcon)

    def resid(env):
        return np.column_stack(
            [np.broadcast_to(evaluate_array(c.lhs, env) - evaluate_array(c.rhs, env), (n,)) for c in plan.nlcon]
        )

    c = np.real(resid(_label_env(plan, est))).astype(np.float64)
    G = np.zeros((n, m, npar))
    h = 1e-20
    used = sorted({par for par, _ in plan.label_src.values() if par >= 0})
    for q in used:
        G[:, :, q] = np.imag(resid(_label_env(plan, est, q, h))) / h
    return c, G


def _nonlinear_fit(plan: Plan, lay, beta, se, var) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-linear constraints per SNP (``b1 == b2^2``, ``b1 * b2 > 0.001``) by sequential
    linearisation: each round fits every SNP not yet done under the linear constraints (their
    inequalities by the kernel's active set) and the non-linear equalities linearised at its
    current estimates (``G theta = G theta_k - c_k``), until they hold to 1e-10 and the estimates
    stop moving (a KKT point).  A non-linear inequality is left out until a SNP's fit breaks it,
    then held as an equality for that SNP; once the SNP's fit has settled with it held, it is
    released when its Lagrange multiplier has the wrong sign (negative in its ``c >= 0`` form:
    the objective falls moving inside), and the SNP goes on without it - the KKT rule of the
    kernel's active set for linear inequalities.  SNPs that do not settle in
    :data:`NL_MAX_ROUNDS` rounds are ST_NOCONV."""
    from polgen.kernels.gwas import ST_NOCONV, ST_OK
    from polgen.kernels.gwas_constrained import constrained_batch
    from polgen.kernels.snp_moments import snp_batch

    assert plan.lincon is not None
    A_eq, b_eq, A_in, b_in = plan.lincon
    n = beta.shape[0]
    stage = plan.stage1
    est = np.tile(stage.starts[0], (n, 1))
    status = np.full(n, ST_NOCONV, np.int64)
    fmin = np.full(n, np.nan)
    eq = np.array([c.op == "==" for c in plan.nlcon])
    # c_j >= 0 form of every non-linear constraint (== : held always; > / < : when active)
    sign = np.array([-1.0 if c.op == "<" else 1.0 for c in plan.nlcon])
    active = np.tile(eq, (n, 1))
    r0 = A_eq.shape[0]  # the non-linear rows follow the linear equalities in the kernel's rows
    prev = np.full(n, np.inf)  # violation of the held constraints after the last round
    todo = np.arange(n)
    for _ in range(NL_MAX_ROUNDS):
        th = est[todo]
        c, G = _nl_linearised(plan, th)
        on = active[todo].astype(np.float64)
        rhs = (np.einsum("imq,iq->im", G, th) - c) * sign * on
        k = todo.size
        Ae = np.concatenate([np.broadcast_to(A_eq, (k, *A_eq.shape)), G * (sign * on)[:, :, None]], axis=1)
        be = np.concatenate([np.broadcast_to(b_eq, (k, b_eq.size)), rhs], axis=1)
        snp = snp_batch(beta[todo], se[todo], var[todo], *plan.ld_args())
        e2, st2, f2, mu = constrained_batch(
            snp, lay, np.nan_to_num(th), stage.snpvar_par, Ae, be, A_in, b_in, ml=plan.ml, multipliers=True
        )
        ok = st2 == ST_OK
        c2 = sign * _nl_linearised(plan, np.nan_to_num(e2))[0]
        # damping: a round that raises the violation of the held constraints is cut back towards
        # its start (sequential linearisation can jump between the branches of b1*b2 = c)
        v_new = np.where(active[todo], np.abs(c2), 0.0).max(axis=1, initial=0.0)
        grow = ok & (v_new > prev[todo]) & np.isfinite(prev[todo])
        damped = grow.copy()
        if grow.any():
            alpha = np.ones(k)
            for _h in range(12):
                alpha[grow] *= 0.5
                trial = th + alpha[:, None] * (np.nan_to_num(e2) - th)
                ct = sign * _nl_linearised(plan, trial)[0]
                vt = np.where(active[todo], np.abs(ct), 0.0).max(axis=1, initial=0.0)
                fixed = grow & (vt <= prev[todo])
                e2[fixed] = trial[fixed]
                c2[fixed] = ct[fixed]
                v_new[fixed] = vt[fixed]
                grow &= ~fixed
                if not grow.any():
                    break
        prev[todo] = np.where(ok, v_new, prev[todo])
        tol = 1e-10 * (1.0 + np.abs(c2).max(axis=1, initial=0.0))
        broken = ok[:, None] & ~active[todo] & (c2 < -tol[:, None])
        active[todo] |= broken
        viol = np.where(active[todo], np.abs(c2), 0.0).max(axis=1, initial=0.0)
        still = np.abs(e2 - th).max(axis=1) <= 1e-9 * (1.0 + np.abs(e2).max(axis=1))
        settled = ok & (viol <= tol) & still & ~broken.any(axis=1) & ~damped
        # KKT: a held inequality whose multiplier is negative is released (mu of the rows
        # sign * G_j, i.e. of c_j >= 0; the multipliers belong to the undamped fit e2)
        mu_nl = np.nan_to_num(mu[:, r0:])
        mu_tol = 1e-8 * (1.0 + np.abs(mu_nl).max(axis=1, initial=0.0))
        release = settled[:, None] & active[todo] & ~eq[None, :] & (mu_nl < -mu_tol[:, None])
        # one at a time, the most negative first (as the kernel's active set)
        worst = np.argmin(np.where(release, mu_nl, np.inf), axis=1)
        rel = release.any(axis=1)
        active[todo[rel], worst[rel]] = False
        prev[todo[rel]] = np.inf
        done = ~ok | (settled & ~rel)
        est[todo] = e2
        fmin[todo] = f2
        status[todo] = np.where(ok, np.where(done, ST_OK, ST_NOCONV), st2)
        todo = todo[~done]
        if todo.size == 0:
            break
    est[status != ST_OK] = np.nan
    return est, status, fmin
