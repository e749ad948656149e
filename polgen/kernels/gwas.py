"""numba kernels for Genomic SEM GWAS (per-SNP construction and batched per-SNP SEM fits).

Everything here takes contiguous float64 / int64 numpy arrays and knows nothing of Polars,
files or model syntax.  The model arrives *compiled* (see :mod:`polgen.gsem.gwas`) in RAM form:
``Sigma_all = B S B'`` with ``B = (I - A)^-1`` over observed (first ``p``, the SNP at index 0) and
latent variables; every parameter entry says which matrix (0 = A, 1 = S), which cell, and which
parameter (or ``-1`` and a fixed value).

Per SNP the kernel reproduces R GenomicSEM (userGWAS / commonfactorGWAS):

* ``V_SNP`` for GC = standard / conserv / none, ``S_full = [[v, v b'], [v b, S_LD]]``,
  ``V_full = blockdiag(varSNPSE^2, V_SNP, V_LD)``, ``Matrix::nearPD`` smoothing of either when
  not positive definite, ``Z_smooth`` as ``smooth_check`` reports it;
* the fit: DWLS (weights ``1 / diag(V_full)``) or ML, by Levenberg-Marquardt damped
  Gauss-Newton / Fisher scoring with an analytic Jacobian, from per-SNP start values;
* sandwich SEs ``bread (W D)' V_full (W D) bread`` with ``bread = (D' W D)^-1``;
* ``Q = eta' V_full^-1 eta`` with ``eta = vech(S_full - Sigma)``; ``Q_SNP`` per factor;
  optionally a Wald statistic over a subset of parameters (commonfactorGWAS's Q).

Work arrays are allocated once per thread chunk, never per SNP (except the rare nearPD path).

The pieces live in their own modules: :mod:`~polgen.kernels.gwas_kernel` (the per-SNP loop),
:mod:`~polgen.kernels.linalg` (Cholesky, inverses, nearPD, sandwich),
:mod:`~polgen.kernels.snp_moments` (V_SNP, S_full, V_full, Z_pre), :mod:`~polgen.kernels.ram`
(RAM implied covariance and Jacobian), :mod:`~polgen.kernels.ram_fit` (objective, LM fit,
``fit_cov``), :mod:`~polgen.kernels.gwas_fast` (fast path), :mod:`~polgen.kernels.commonfactor`,
:mod:`~polgen.kernels.gwas_defined` (``:=`` SEs), and the codes in
:mod:`~polgen.kernels.gwas_codes`.  This module is the batch entry point; it re-exports what
callers import from ``polgen.kernels.gwas``.

The batch kernel takes five named tuples: :class:`SnpBatch` (per-SNP inputs and LDSC matrices),
:class:`RamLayout` (the compiled model), :class:`GwasSpec` (what to fit and how), :class:`FastPath`
(the fast-path structure, inert when off) and :class:`GwasOut` (output arrays).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from polgen.kernels._threads import n_chunks, run_chunks
from polgen.kernels.commonfactor import CF_LMAX, CF_RIDGE, CfOut, CfSpec, commonfactor_fit  # noqa: F401
from polgen.kernels.gwas_codes import (  # noqa: F401
    FLAG_S_SMOOTHED,
    FLAG_V_SMOOTHED,
    GC_CONSERV,
    GC_NONE,
    GC_STANDARD,
    ST_BAD_BETA,
    ST_BAD_SE,
    ST_BAD_VAR,
    ST_ML_NOTPD,
    ST_NEARPD_FAIL,
    ST_NOCONV,
    ST_NOFINITE,
    ST_NONFINITE,
    ST_OK,
    ST_SINGULAR,
    STATUS_REASONS,
)
from polgen.kernels.gwas_fast import FastPath, fast_path, fast_structure, ram_closed_form, reduce_fast  # noqa: F401
from polgen.kernels.gwas_kernel import ST_SMOOTH_LATER, _snp_range
from polgen.kernels.linalg import near_pd, sandwich_into  # noqa: F401
from polgen.kernels.ram import RamLayout, implied_jacobian, implied_jacobian_into, ram_layout  # noqa: F401
from polgen.kernels.ram_fit import fit_cov  # noqa: F401
from polgen.kernels.snp_moments import SnpBatch, s_full_into, snp_batch, v_full_into, v_snp_into, z_pre_into  # noqa: F401

#: What to fit and how, per batch: free parameters ``fidx`` (positions in theta), start values
#: ``theta0`` (1 x npar or n x npar), the SNP-variance parameter ``snpvar_par`` (-1: none), ``ml``
#: and ``ml_wmode`` (0: Sigma^-1 of the fit, 1: of S_full for the ML weight), LM ``max_iter`` /
#: ``xtol``, ``toler`` (singularity), ``smooth_check``, Q_SNP groups ``q_ptr, q_obs, q_trait``
#: (CSR), Wald subset ``wald_idx``, the V_full block shortcut ``block, LLD, wLD``, and ``se_fidx``:
#: the free parameters of the standard errors (``fidx`` plus the residual variances the RAM fit
#: solves in closed form, see :func:`ram_closed_form`; ``fidx`` itself on the fast path).
GwasSpec = namedtuple(
    "GwasSpec",
    [
        "fidx",
        "theta0",
        "snpvar_par",
        "ml",
        "ml_wmode",
        "max_iter",
        "xtol",
        "toler",
        "smooth_check",
        "q_ptr",
        "q_obs",
        "q_trait",
        "wald_idx",
        "block",
        "LLD",
        "wLD",
        "se_fidx",
    ],
)
#: Output arrays (n rows): est, se (n x npar), chisq, qsnp (n x groups), zsmooth, wald, fmin,
#: status, flags, iters.
GwasOut = namedtuple("GwasOut", ["est", "se", "chisq", "qsnp", "zsmooth", "wald", "fmin", "status", "flags", "iters"])


def _block_args(lay, V_LD, k, v_pd_known):
    """Block mode: V_full is PD for every SNP and the model observes every trait in covstruc order,
    so V_sub = blockdiag(varSNPSE^2, V_SNP, V_LD) and its pieces are used directly.
    Returns the (block, LLD, wLD) fields of :class:`GwasSpec`."""
    K1 = k + 1
    nmom = len(lay.ma)
    ok = (
        v_pd_known
        and nmom == K1 * (K1 + 1) // 2
        and np.array_equal(lay.vidx, np.arange(nmom))
        and np.array_equal(lay.vidx_meat, lay.vidx)
    )
    V_LD = np.asarray(V_LD, dtype=np.float64)
    if ok:
        try:
            L = np.ascontiguousarray(np.linalg.cholesky(V_LD))
        except np.linalg.LinAlgError:
            ok = False
    if not ok:
        m = max(V_LD.shape[0], 1)
        return False, np.eye(m), np.ones(m)
    return True, L, np.ascontiguousarray(1.0 / np.diag(V_LD))


def gwas_batch(
    beta,
    se,
    var,
    S_LD,
    V_LD,
    I_LD,
    gc,
    varse2,
    v_pd_known,
    model,
    fidx,
    theta0,
    snpvar_par,
    *,
    ml=False,
    ml_wmode=0,
    max_iter=1000,
    xtol=1e-10,
    toler=0.0,
    smooth_check=False,
    q_ptr=None,
    q_obs=None,
    q_trait=None,
    wald_idx=None,
    fast=None,
    eliminate=True,
    parallel=None,
):
    """Fit one batch of SNPs.  ``model`` is a mapping of the compiled RAM arrays (see gsem.gwas).

    ``eliminate``: solve the residual variances of observed indicators in closed form (DWLS; each
    fits its own diagonal moment exactly): on the fast path their SEs are then not computed, in
    the RAM fit they are (the sandwich over all of ``fidx`` at the solution).

    Returns a dict of arrays: est, se (n x npar), chisq, qsnp (n x groups), zsmooth, wald,
    status, flags, iters.
    """
    n = beta.shape[0]
    npar = theta0.shape[1]
    i64 = np.int64
    q_ptr = np.zeros(1, i64) if q_ptr is None else np.ascontiguousarray(q_ptr, i64)
    q_obs = np.zeros(0, i64) if q_obs is None else np.ascontiguousarray(q_obs, i64)
    q_trait = np.zeros(0, i64) if q_trait is None else np.ascontiguousarray(q_trait, i64)
    wald_idx = np.zeros(0, i64) if wald_idx is None else np.ascontiguousarray(wald_idx, i64)
    ng = q_ptr.shape[0] - 1
    out = {
        "est": np.empty((n, npar)),
        "se": np.empty((n, npar)),
        "chisq": np.empty(n),
        "qsnp": np.empty((n, ng)),
        "zsmooth": np.empty(n),
        "wald": np.empty(n),
        "fmin": np.empty(n),
        "status": np.empty(n, np.int64),
        "flags": np.empty(n, np.int64),
        "iters": np.empty(n, np.int64),
    }
    elim_par = elim_mom = None
    se_fidx = None
    if fast is not None and eliminate and not ml:
        fast, fidx, elim_par, elim_mom = reduce_fast(fast, fidx)
    elif fast is None and not ml and eliminate and max_iter > 0:
        # (max_iter = 0 evaluates given estimates, e.g. a constrained fit's: nothing re-solved)
        # the RAM fit (DWLS) profiles out the indicator residual variances; SEs over all of fidx
        keep, elim_par, elim_mom = ram_closed_form(model, fidx, snpvar_par)
        if elim_par.size:
            se_fidx = np.ascontiguousarray(fidx, i64)
            fidx = np.asarray(fidx, i64)[keep]
    lay = ram_layout(model)
    snp = snp_batch(beta, se, var, S_LD, V_LD, I_LD, gc, varse2, v_pd_known)
    spec = GwasSpec(
        np.ascontiguousarray(fidx, i64),
        np.ascontiguousarray(theta0, np.float64),
        int(snpvar_par),
        bool(ml),
        int(ml_wmode),
        int(max_iter),
        float(xtol),
        float(toler),
        bool(smooth_check),
        q_ptr,
        q_obs,
        q_trait,
        wald_idx,
        *_block_args(lay, snp.V_LD, snp.beta.shape[1], snp.v_pd_known),
        np.ascontiguousarray(fidx if se_fidx is None else se_fidx, i64),
    )
    fp = fast_path(fast, lay.ma.shape[0], lay.p, len(fidx), elim_par, elim_mom)
    res = GwasOut(**out)
    # rows per thread chunk: the fast path takes ~5 us per SNP, a RAM fit 50 us to a few ms
    min_rows = 256 if fp.on else 16
    if parallel is None:
        parallel = n >= 8 * min_rows
    if n == 0:
        return out
    # None / True select at compile time: the fast path or the RAM fit, ML or DWLS, the V_full
    # block shortcut or V_full per SNP (see _snp_range); a call compiles only its configuration
    fit = (True, None) if fp.on else (None, True)  # (fast, full)
    modes = (*fit, True if ml else None, None if ml else True, None if spec.block else True)
    if parallel:
        # chunks on Python threads (the kernel is nogil): no parfor compilation, same rows
        run_chunks(_snp_range, n, n_chunks(n, min_rows), snp, lay, spec, fp, res, *modes, None)
    else:
        _snp_range(0, n, snp, lay, spec, fp, res, *modes, None)
    redo = np.flatnonzero(res.status == ST_SMOOTH_LATER)
    if redo.size:
        # the few SNPs whose S_full / V_full needs nearPD: the kernel specialisation with it
        sub_snp = snp._replace(beta=snp.beta[redo], se=snp.se[redo], var=snp.var[redo])
        sub_spec = spec._replace(theta0=spec.theta0[redo]) if spec.theta0.shape[0] > 1 else spec
        sub = GwasOut(*(a[redo] for a in res))
        _snp_range(0, redo.size, sub_snp, lay, sub_spec, fp, sub, *modes, True)
        for a, b in zip(res, sub):
            a[redo] = b
    return out
