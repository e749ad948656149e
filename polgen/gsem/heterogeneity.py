"""Heterogeneity of an external trait's genetic associations through a factor (R GenomicSEM ``QTrait``,
``localSRMD``).

:func:`q_trait` follows R's ``QTrait`` step by step, with every model fitted by
:func:`~polgen.gsem.usermodel` on the covstruc (DWLS):

1. a common factor ``F1`` over the indicators (``std.lv``, residual variances bounded above 0.001);
   its unstandardised loadings are then fixed (pasted with 15 significant digits, as R's ``paste``);
2. per external trait ``T`` (as a latent ``TF`` with ``T ~~ 0*T``), the *common pathway model*
   (``F1 ~ TF``) and the *independent pathway model* (every indicator ``~ TF``, ``F1 ~~ 0*TF``);
   ``QTrait = chisq(CPM) - chisq(IPM)`` on ``df(CPM) - df(IPM)`` degrees of freedom;
3. the local SRMR: root mean square of observed minus CPM-implied genetic correlations between
   ``T`` and the indicators;
4. heterogeneity when ``F1 ~ TF`` is significant, QTrait is significant (both at the Bonferroni
   threshold ``0.05 / len(traits)``) and the local SRMR exceeds both ``lsrmr_threshold`` and
   ``lsrmr`` times the root mean square observed correlation;
5. then follow-up models free a direct path ``indicator ~ TF`` for the indicator with the largest
   residual correlation, adding one indicator at a time (in the order of the CPM residuals) while
   the follow-up model is still heterogeneous and some residual is an outlier (at least
   ``mresid`` times the root mean square correlation and ``mresid_threshold``).

The table has R's ``Q_mat`` columns (names as R spells them); follow-up columns are missing
(``"-"`` for the flags, ``Unconstrained_paths = "None"``) when no follow-up model was fitted.
R's plots are not drawn; the per-indicator numbers R plots are in ``QTraitResult.indicators``.

Where R's code has gaps polgen takes the evident reading: a ``p`` below 5e-300 (usermodel's
``"< 5e-300"``) is 5e-300 for the follow-up models too (R: NA there); a follow-up model without a
chi-square (df = 0) or with no indicator left to free ends the follow-up loop (R stops with an
error); ``SE_rG`` is the SE of the trait-indicator correlation whichever comes first in the
covstruc (R reads the lower triangle only, so 0 for an indicator listed after the trait).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.gsem.covstruc import as_covstruc
from polgen.gsem.fit_models import SEMResult, usermodel
from polgen.gsem.matrix import cov_to_cor, vech_indices
from polgen.gsem.stats import chi2_sf

log = logging.getLogger("polgen")

__all__ = ["QTraitResult", "local_srmd", "q_trait"]

#: R's smallest reported p-value (usermodel writes "< 5e-300", QTrait reads it as 5e-300)
_P_FLOOR = 5e-300

_TEXT_COLUMNS = (
    "rGF1Trait_significat_CPM",
    "Qsignificant_CPM",
    "lSRMR_above_threshold_CPM",
    "heterogeneity_CPM",
    "rGF1Trait_significat_FUM",
    "Qsignificant_FUM",
    "lSRMR_above_threshold_FUM",
    "reduction_lSRMR",
    "heterogeneity_FUM",
    "Unconstrained_paths",
)
_COLUMNS = (
    "rGF1Trait_CPM",
    "SErGF1Trait_CPM",
    "pvalrGF1Trait_CPM",
    "rGF1Trait_significat_CPM",
    "QTrait_CPM",
    "df_CPM",
    "p_value_CPM",
    "Qsignificant_CPM",
    "lSRMR_CPM",
    "lSRMR_above_threshold_CPM",
    "heterogeneity_CPM",
    "rGF1Trait_FUM",
    "SErGF1Trait_FUM",
    "pvalrGF1Trait_FUM",
    "rGF1Trait_significat_FUM",
    "QTrait_FUM",
    "df_FUM",
    "p_value_FUM",
    "Qsignificant_FUM",
    "lSRMR_FUM",
    "lSRMR_above_threshold_FUM",
    "reduction_lSRMR",
    "heterogeneity_FUM",
    "Unconstrained_paths",
)


@dataclass
class QTraitResult:
    """:func:`q_trait` output.

    ``table``: one row per external trait with ``trait`` and R's ``Q_mat`` columns.
    ``indicators``: per trait, one row per indicator: observed, CPM-implied and residual genetic
    correlation with the trait, the genetic covariance, the fixed loading (unstandardised and
    standardised), the independent-pathway ``indicator ~ TF`` estimate and SE, and the SE of the
    observed correlation (what R's QTrait plots).  ``fits``: per trait the fitted models
    (``"CPM"``, ``"IPM"``, and ``"FUM:<freed indicators>"``); ``factor_fit``: the common factor
    model; ``bonferroni``: the p-value threshold used.
    """

    table: pl.DataFrame
    indicators: dict[str, pl.DataFrame]
    fits: dict[str, dict[str, SEMResult]]
    factor_fit: SEMResult
    bonferroni: float
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"QTraitResult({self.table.height} traits, Bonferroni p < {self.bonferroni:.3g})\n{self.table}"


def _num(value: float) -> str:
    """A number as R's ``paste`` writes it (15 significant digits)."""
    return f"{value:.15g}"


def _row(res: SEMResult, lhs: str, op: str, rhs: str) -> dict[str, Any]:
    p = res.parameters.filter((pl.col("lhs") == lhs) & (pl.col("op") == op) & (pl.col("rhs") == rhs))
    if p.height != 1:
        raise InputError(f"the fitted model has no parameter {lhs} {op} {rhs}")
    return p.row(0, named=True)


def _chisq(res: SEMResult) -> tuple[float | None, int]:
    f = res.fit.row(0, named=True)
    chi = f["chisq"]
    return (None if chi is None or not np.isfinite(chi) else float(chi)), int(f["df"])


def _implied_cor(res: SEMResult, trait: str, indicators: Sequence[str]) -> np.ndarray:
    assert res.implied is not None
    names = res.implied["trait"].to_list()
    imp = res.implied.drop("trait").to_numpy()
    cor = cov_to_cor(imp)
    i = names.index(trait)
    return np.array([cor[i, names.index(t)] for t in indicators])


def _flag(ok: bool | None, yes: str = "*", no: str = "NS") -> str | None:
    return None if ok is None else (yes if ok else no)


def _pvalue(row: dict[str, Any]) -> float:
    p = row["p"]
    return _P_FLOOR if p is not None and p < _P_FLOOR else float(p)


def q_trait(
    covstruc: Any,
    indicators: Sequence[str],
    traits: Sequence[str],
    mresid: float = 0.25,
    mresid_threshold: float = 0.10,
    lsrmr: float = 0.25,
    lsrmr_threshold: float = 0.10,
) -> QTraitResult:
    """QTrait heterogeneity tests of external traits' associations with a common factor (R ``QTrait``).

    Parameters
    ----------
    covstruc
        LDSC output with the standardised matrices (``ldsc(stand=True)``: ``S_Stand``, ``V_Stand``).
    indicators
        Traits defining the common factor ``F1`` (at least 3).
    traits
        External traits tested one at a time.
    mresid
        Proportion of the root mean square genetic correlation above which a residual correlation
        marks an outlying indicator (R ``mresid``).
    mresid_threshold
        Absolute residual correlation below which an indicator is never an outlier (R ``mresidthreshold``).
    lsrmr
        Proportion of the root mean square genetic correlation the local SRMR must exceed (R ``lsrmr``).
    lsrmr_threshold
        Absolute value the local SRMR must exceed (R ``lsrmrthreshold``).

    Returns
    -------
    QTraitResult
        ``table`` (R's ``Q_mat``), per-indicator numbers and the fitted models.

    Raises
    ------
    SchemaError
        The covstruc has no ``S_Stand`` / ``V_Stand``.
    InputError
        An indicator or trait is not in the covstruc, repeated, or both an indicator and a trait.
    """
    cs = as_covstruc(covstruc)
    if cs.S_Stand is None or cs.V_Stand is None:
        raise SchemaError(
            "q_trait needs genetic correlations and their sampling covariance: rebuild the covstruc with "
            "ldsc(stand=True)",
            column="S_Stand",
        )
    indicators = [str(t) for t in indicators]
    traits = [str(t) for t in traits]
    names = cs.trait_names
    for role, group in (("indicator", indicators), ("trait", traits)):
        miss = [t for t in group if t not in names]
        if miss:
            raise InputError(f"{role}(s) {miss} not in the covstruc traits {names}", column=f"{role}s")
        if len(set(group)) != len(group):
            raise InputError(f"{role}s are repeated: {group}", column=f"{role}s")
    both = sorted(set(indicators) & set(traits))
    if both:
        raise InputError(f"{both} are both indicators and external traits", column="traits")
    if len(indicators) < 3:
        raise InputError(f"a common factor needs at least 3 indicators, got {len(indicators)}", column="indicators")
    for nm, v in (("mresid", mresid), ("mresid_threshold", mresid_threshold), ("lsrmr", lsrmr)):
        if not np.isfinite(v) or v < 0:
            raise InputError(f"{nm} must be a non-negative number, got {v!r}", column=nm)

    nind = len(indicators)
    resid_lines = "\n".join(f"{t}~~ rv{j + 1}*{t}" for j, t in enumerate(indicators))
    bound_lines = "\n".join(f"rv{j + 1}>0.001" for j in range(nind))
    cf_free = "\n".join([f"F1 =~  {' + '.join(indicators)}", resid_lines, bound_lines])
    log.info("q_trait: fitting the common factor model of %s", indicators)
    cfm = usermodel(cs, cf_free, estimation="DWLS", CFIcalc=False, std_lv=True, imp_cov=False)
    lam = cfm.parameters.filter((pl.col("lhs") == "F1") & (pl.col("op") == "=~")).select("rhs", "est")
    loads = " + ".join(f"{_num(v)} * {t}" for t, v in lam.iter_rows())
    cf_fixed = "\n".join([f"F1 =~ {loads}", resid_lines, bound_lines])

    bonf = 0.05 / len(traits)
    S_std = cs.S_Stand
    pos = {t: j for j, t in enumerate(names)}
    rows: list[dict[str, Any]] = []
    per_indicator: dict[str, pl.DataFrame] = {}
    fits: dict[str, dict[str, SEMResult]] = {}
    warnings: list[str] = []
    se_r = np.zeros((cs.k, cs.k))  # SEs of the genetic correlations, lower triangle (vech order)
    se_r[vech_indices(cs.k)] = np.sqrt(np.diag(cs.V_Stand))

    for trait in traits:
        tf = f"{trait}F"
        head = f"\n{tf} =~ NA*{trait}\n{trait} ~~ 0*{trait} "
        log.info("q_trait: common and independent pathway models for %s", trait)
        cpm = usermodel(cs, f"{cf_fixed}{head}\nF1 ~ {tf} \n{tf} ~~ 1*{tf}  \n ", CFIcalc=True, imp_cov=True)
        ipm_model = (
            f"{cf_fixed}\n{tf} =~ NA*{trait} \n{trait} ~~ 0*{trait} \n{' + '.join(indicators)} ~ {tf} "
            f"\n{tf} ~~ 1*{tf} \nF1~~0*{tf} \nF1~~rvl*F1 \nrvl>0.001  \n "
        )
        ipm = usermodel(cs, ipm_model, CFIcalc=True, imp_cov=False)
        fits[trait] = {"CPM": cpm, "IPM": ipm}
        cp_chi, cp_df = _chisq(cpm)
        ip_chi, ip_df = _chisq(ipm)
        ip_chi = 0.0 if ip_chi is None else ip_chi
        q_cpm = None if cp_chi is None else cp_chi - ip_chi
        q_df = cp_df - ip_df
        q_p = None if q_cpm is None else float(chi2_sf(np.array([q_cpm]), q_df)[0])

        resid_var = {
            r["lhs"]: r["est"]
            for r in cpm.parameters.filter((pl.col("op") == "~~") & (pl.col("lhs") == pl.col("rhs"))).iter_rows(
                named=True
            )
        }
        lam_std = np.array([v / np.sqrt(v * v + resid_var[t]) for t, v in lam.iter_rows()])
        b_cpm = _row(cpm, "F1", "~", tf)
        p_cpm = _pvalue(b_cpm)
        observed = np.array([S_std[pos[trait], pos[t]] for t in indicators])
        implied = _implied_cor(cpm, trait, indicators)
        resid = observed - implied
        lsrmr_cpm = float(np.sqrt(np.mean(resid**2)))
        rms_obs = float(np.sqrt(np.mean(observed**2)))
        beta_sig = p_cpm < bonf
        q_sig = None if q_p is None or not np.isfinite(q_p) else q_p < bonf
        above = lsrmr_cpm > lsrmr_threshold and lsrmr_cpm > lsrmr * rms_obs
        het = bool(beta_sig and q_sig and above)
        row: dict[str, Any] = {
            "trait": trait,
            "rGF1Trait_CPM": b_cpm["est"],
            "SErGF1Trait_CPM": b_cpm["se"],
            "pvalrGF1Trait_CPM": p_cpm,
            "rGF1Trait_significat_CPM": _flag(beta_sig),
            "QTrait_CPM": q_cpm,
            "df_CPM": float(q_df),
            "p_value_CPM": q_p,
            "Qsignificant_CPM": _flag(q_sig),
            "lSRMR_CPM": lsrmr_cpm,
            "lSRMR_above_threshold_CPM": "Yes" if above else "No",
            "heterogeneity_CPM": "Yes" if het else "No",
        }
        fum_cols: dict[str, Any] = {c: None for c in _COLUMNS[11:]}
        fum_cols.update({c: "-" for c in _TEXT_COLUMNS[4:9]})
        fum_cols["Unconstrained_paths"] = "None"
        outlying = (np.abs(resid) >= mresid_threshold) & (np.abs(resid) >= mresid * rms_obs)
        if het and outlying.any():
            fum_cols = _follow_up(
                cs,
                cf_fixed,
                head,
                trait,
                indicators,
                resid,
                observed,
                ip_chi,
                ip_df,
                lsrmr_cpm,
                rms_obs,
                bonf,
                mresid,
                mresid_threshold,
                lsrmr,
                lsrmr_threshold,
                fits[trait],
            )
            n_out = len(str(fum_cols["Unconstrained_paths"]).split(","))
            if n_out > 0.5 * nind:
                msg = (
                    f"{trait}: majority of indicators identified as outlying; the common factor model may be inadequate"
                )
                log.warning("q_trait: %s", msg)
                warnings.append(msg)
        row.update(fum_cols)
        rows.append(row)

        b_ind = {
            r["lhs"]: (r["est"], r["se"])
            for r in ipm.parameters.filter(
                (pl.col("op") == "~") & pl.col("lhs").is_in(indicators) & (pl.col("rhs") == tf)
            ).iter_rows(named=True)
        }
        per_indicator[trait] = pl.DataFrame(
            {
                "Indicator": indicators,
                "Observed": observed,
                "Model implied": implied,
                "Residual": resid,
                "Covariance": [cs.S[pos[trait], pos[t]] for t in indicators],
                "Lambda_unstd": lam["est"].to_numpy(),
                "Lambda_std": lam_std,
                "Beta": [b_ind[t][0] for t in indicators],
                "Beta_SE": [b_ind[t][1] for t in indicators],
                "SE_rG": [se_r[max(pos[trait], pos[t]), min(pos[trait], pos[t])] for t in indicators],
            }
        )

    schema: dict[str, Any] = {"trait": pl.String}
    schema.update({c: (pl.String if c in _TEXT_COLUMNS else pl.Float64) for c in _COLUMNS})
    table = pl.DataFrame(rows, schema=schema)
    return QTraitResult(
        table=table, indicators=per_indicator, fits=fits, factor_fit=cfm, bonferroni=bonf, warnings=warnings
    )


def _follow_up(
    cs,
    cf_fixed: str,
    head: str,
    trait: str,
    indicators: list[str],
    resid_cpm: np.ndarray,
    observed: np.ndarray,
    ip_chi: float,
    ip_df: int,
    lsrmr_cpm: float,
    rms_obs: float,
    bonf: float,
    mresid: float,
    mresid_threshold: float,
    lsrmr: float,
    lsrmr_threshold: float,
    fits: dict[str, SEMResult],
) -> dict[str, Any]:
    """R QTrait's follow-up models: free ``indicator ~ TF`` paths one outlier at a time."""
    tf = f"{trait}F"
    by_resid = [indicators[j] for j in np.argsort(-np.abs(resid_cpm), kind="stable")]
    freed = [by_resid[0]]
    first = True
    while True:
        model = (
            f"{cf_fixed}{head}\nF1 ~ {tf} \n{tf} ~~ 1*{tf} \n{' + '.join(freed)} ~ {tf} \nF1~~rvl*F1 \nrvl>0.001  \n "
        )
        log.info("q_trait: follow-up model for %s freeing %s", trait, ",".join(freed))
        fum = usermodel(cs, model, CFIcalc=True, imp_cov=True)
        fits[f"FUM:{','.join(freed)}"] = fum
        chi, df = _chisq(fum)
        if chi is None and first:
            chi = 0.0  # R sets a missing first follow-up chisq to 0 (and not those of later ones)
        first = False
        q = None if chi is None else chi - ip_chi
        qdf = df - ip_df
        qp = None if q is None else float(chi2_sf(np.array([q]), qdf)[0])
        b = _row(fum, "F1", "~", tf)
        p = _pvalue(b)
        resid = observed - _implied_cor(fum, trait, indicators)
        lsrmr_fum = float(np.sqrt(np.mean(resid**2)))
        q_sig = None if qp is None or not np.isfinite(qp) else qp < bonf
        above = lsrmr_fum > lsrmr_threshold and lsrmr_fum > lsrmr * rms_obs
        beta_sig = p < bonf
        het = bool(beta_sig and q_sig and above)
        outlying = (np.abs(resid) >= mresid * rms_obs) & (np.abs(resid) >= mresid_threshold)
        left = [t for t in by_resid if t not in freed]
        if not (het and qdf != 0 and outlying.any() and left):
            break
        freed = [*freed, left[0]]
    return {
        "rGF1Trait_FUM": b["est"],
        "SErGF1Trait_FUM": b["se"],
        "pvalrGF1Trait_FUM": p,
        "rGF1Trait_significat_FUM": _flag(beta_sig),
        "QTrait_FUM": q,
        "df_FUM": float(qdf),
        "p_value_FUM": qp,
        "Qsignificant_FUM": _flag(q_sig),
        "lSRMR_FUM": lsrmr_fum,
        "lSRMR_above_threshold_FUM": "Yes" if above else "No",
        "reduction_lSRMR": f"{round((lsrmr_cpm - lsrmr_fum) / lsrmr_cpm * 100.0, 2):.15g}%",
        "heterogeneity_FUM": "Yes" if het else "No",
        "Unconstrained_paths": ",".join(freed),
    }


# --------------------------------------------------------------------------------------------
# localSRMD
# --------------------------------------------------------------------------------------------
def local_srmd(unconstrained: Any, constrained: Any, lhs_var: Any, rhs_var: Any) -> float:
    """Local standardised root mean square difference between two sets of estimates (R ``localSRMD``).

    ``sqrt(mean(((u - c) / (sd_lhs * sd_rhs))^2))`` over the parameters (missing differences are
    skipped, as R's ``na.rm=TRUE``), where ``sd_lhs`` / ``sd_rhs`` are the pooled standard
    deviations of each parameter's left- and right-hand variables: the square root of the mean of
    their variances over the ``g`` groups.

    Parameters
    ----------
    unconstrained, constrained
        Estimates of the same ``h * g`` parameters without and with the constraint, group by group
        (the ``h`` parameters of group 1, then of group 2, ...).
    lhs_var, rhs_var
        ``h x g``: per parameter, the variance of its left-hand (right-hand) variable in each group
        (R: a list of ``h`` vectors of length ``g``).

    Returns
    -------
    float
        The local SRMD.
    """
    u = np.asarray(unconstrained, dtype=np.float64).reshape(-1)
    c = np.asarray(constrained, dtype=np.float64).reshape(-1)
    lv = np.atleast_2d(np.asarray(lhs_var, dtype=np.float64))
    rv = np.atleast_2d(np.asarray(rhs_var, dtype=np.float64))
    if u.size != c.size:
        raise InputError(f"unconstrained has {u.size} estimates but constrained has {c.size}", column="constrained")
    if lv.shape != rv.shape:
        raise InputError(f"lhs_var is {lv.shape} but rhs_var is {rv.shape}", column="rhs_var")
    h, g = lv.shape
    if u.size != h * g:
        raise InputError(
            f"{u.size} estimates for {h} parameters in {g} groups (lhs_var is {h} x {g}); expected {h * g}",
            column="unconstrained",
        )
    if np.any(lv < 0) or np.any(rv < 0):
        raise InputError("variances in lhs_var / rhs_var must be non-negative", column="lhs_var")
    log.info("local_srmd over h = %d parameters in g = %d groups (%d in total)", h, g, u.size)
    sd = np.sqrt(lv.mean(axis=1)) * np.sqrt(rv.mean(axis=1))
    d = ((u - c) / np.tile(sd, g)) ** 2
    if np.all(np.isnan(d)):
        raise InputError("no parameter has both an unconstrained and a constrained estimate", column="unconstrained")
    return float(np.sqrt(np.nanmean(d)))
