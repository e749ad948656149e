"""Genomic SEM GWAS, the fit without SNP effects: the model without its SNP lines fitted once to
``S_LD`` (DWLS weights ``diag(V_LD)^-1``, or ML), whose estimates fix the measurement model
(``fix_measurement``) and start the per-SNP fits.  Bounds by an active set (lavaan's solution),
several sign starts (the lowest objective wins), lavaan's factor signs; constraints the kernels'
numbering cannot express go through :func:`polgen.gsem.sem.fit_sem`."""

from __future__ import annotations

import numpy as np

from polgen.errors import ConvergenceError, ModelError
from polgen.gsem.constraints import canonical_signs_rows, kernel_constraints, number_parameters, sign_flips
from polgen.gsem.gwas_starts import sign_starts, start_values
from polgen.gsem.ram import Numbering, compile_model, kernel_layout, vech_index
from polgen.gsem.sem import fit_sem
from polgen.gsem.syntax import ParTable, parse_model

__all__ = ["fit_baseline", "fit_cov_bounded"]


def fit_cov_bounded(s, w, arrays, npar, start, lo, hi, ml):
    """fit_cov with bounds by an active set (as lavaan's solution: parameters that would leave
    their interval are held at the bound, one is released when it moves back inside)."""
    from polgen.kernels.gwas import ST_OK, fit_cov

    at = np.zeros(npar, np.int8)  # 0 free, 1 at lower, 2 at upper
    th0 = np.array(start, dtype=np.float64, copy=True)
    for _ in range(2 * npar + 2):
        th0[at == 1] = lo[at == 1]
        th0[at == 2] = hi[at == 2]
        fidx = np.nonzero(at == 0)[0].astype(np.int64)
        th, st, _, sig = fit_cov(s, w, arrays, fidx, th0, ml=ml)
        if st != ST_OK:
            return th, st, sig
        viol = np.where(th < lo, 1, np.where(th > hi, 2, 0)).astype(np.int8)
        viol[at != 0] = 0
        if not viol.any():
            return th, st, sig
        at = np.where(viol != 0, viol, at)
        th0 = np.where(viol != 0, th0, th)
    return th, st, sig


def _fit_baseline_sem(
    pt0: ParTable, S_LD: np.ndarray, V_LD: np.ndarray, traits: list[str], ml: bool
) -> tuple[Numbering, dict]:
    """The no-SNP model fit by the SEM fitter (:func:`polgen.gsem.sem.fit_sem`), for constraints
    the per-SNP kernels' numbering cannot express (``a == 2*b``, ``a > b``, ``a == b^2``, ...):
    DWLS with weights ``1 / diag(V_LD)`` of the model's moments, or ML, as R's userGWAS."""
    cm = compile_model(pt0)
    k = len(traits)
    pos = [traits.index(t) for t in cm.observed]
    S = S_LD[np.ix_(pos, pos)]
    idx = np.array([vech_index(pos[a], pos[b], k) for a, b in zip(cm.vech_row, cm.vech_col)], np.int64)
    fit = fit_sem(cm, S, estimator="ML" if ml else "DWLS", W_diag=1.0 / np.diag(V_LD)[idx])
    if not fit.converged:
        raise ConvergenceError("the model without SNP effects (fix_measurement) did not converge")
    rows = cm.table.rows
    num0 = Numbering(
        np.array([r.free - 1 for r in rows], np.int64),
        np.array([r.ustart if r.free == 0 else np.nan for r in rows], np.float64),
        np.array([r.lower for r in rows], np.float64),
        np.array([r.upper for r in rows], np.float64),
        cm.n_free,
    )
    est = {(r.lhs, r.op, r.rhs): float(v) for r, v in zip(rows, fit.values)}
    return num0, est


def fit_baseline(
    text: str, S_LD: np.ndarray, V_LD: np.ndarray, traits: list[str], *, std_lv: bool, ml: bool
) -> tuple[ParTable, Numbering, dict]:
    """Fit the model without its SNP lines to S_LD (DWLS weights diag(V_LD)^-1, or ML)."""
    from polgen.kernels.gwas import ST_OK

    pt0 = parse_model(text, std_lv=std_lv, fixed_x=False)
    missing = [v for v in pt0.observed if v not in traits]
    if missing:
        raise ModelError(f"model variables {missing} are not traits of the covstruc {traits}")
    if not kernel_constraints(pt0):
        num_s, est_s = _fit_baseline_sem(pt0, S_LD, V_LD, traits, ml)
        return pt0, num_s, est_s
    num0 = number_parameters(pt0)
    npar = num0.n
    cm = kernel_layout(pt0, num0, traits, snp_name="\0none", observed=pt0.observed)
    k = len(traits)
    tix = [int(j) - 1 for j in cm.obs_map]
    s = np.array([S_LD[tix[a], tix[b]] for a, b in zip(cm.ma, cm.mb)])
    w = np.array(
        [1.0 / V_LD[vech_index(tix[a], tix[b], k), vech_index(tix[a], tix[b], k)] for a, b in zip(cm.ma, cm.mb)]
    )
    th0 = start_values(pt0, num0, S_LD, traits)
    lo, hi = num0.bounds()
    best = None
    for start in sign_starts(pt0, num0, th0):
        th, st, sig = fit_cov_bounded(s, w, cm.arrays(), npar, start, lo, hi, ml)
        if st != ST_OK:
            continue
        if ml:
            f = float(np.sum((s - sig) ** 2))
        else:
            f = float(np.sum(w * (s - sig) ** 2))
        if best is None or f < best[0] - 1e-12 * abs(best[0]):
            best = (f, th)
    if best is None:
        raise ConvergenceError("the model without SNP effects (fix_measurement) did not converge")
    th = best[1][None, :].copy()
    canonical_signs_rows(sign_flips(pt0, num0.par), th, lo, hi)
    th = th[0]
    est = {}
    for r, q, val in zip(pt0.rows, num0.par.tolist(), num0.value.tolist()):
        est[(r.lhs, r.op, r.rhs)] = float(th[q]) if q >= 0 else float(val)
    return pt0, num0, est
