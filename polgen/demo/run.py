"""``polgen demo``: generate the three demo data sets and run each method end to end.

:func:`run_demo` returns a summary table (one row per step: what ran, how long, the key number and
how it compares with the truth the data were simulated from).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from polgen.demo.data import (
    GsemDemo,
    LfmmDemo,
    StlrDemo,
    make_gsem_demo,
    make_lfmm_demo,
    make_stlr_demo,
    prepare_out_dir,
)
from polgen.errors import InputError
from polgen.io.sink import write_table_atomic

log = logging.getLogger("polgen")

__all__ = ["run_demo"]


class _Steps:
    """Runs demo steps, timing each and recording ok / failed / skipped."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, method: str, step: str, status: str, seconds: float, result: str) -> None:
        self.rows.append(
            {"method": method, "step": step, "status": status, "seconds": round(float(seconds), 2), "result": result}
        )

    def run(self, method: str, step: str, fn: Callable[[], tuple[Any, str]], *, needs: Any = True):
        """``fn() -> (value, result text)``; returns ``value`` or None when the step did not run."""
        if needs is None:
            self.add(method, step, "skipped", 0.0, "an earlier step did not complete")
            return None
        t0 = time.perf_counter()
        try:
            value, text = fn()
        except Exception as exc:  # a demo step failing must not stop the other methods
            log.exception("demo step %s/%s failed", method, step)
            self.add(method, step, "failed", time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
            return None
        self.add(method, step, "ok", time.perf_counter() - t0, text)
        return value

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            self.rows,
            schema={
                "method": pl.String,
                "step": pl.String,
                "status": pl.String,
                "seconds": pl.Float64,
                "result": pl.String,
            },
        )


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    pos = np.asarray(positive, dtype=bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _fmt3(x: float) -> str:
    return f"{x:.3f}"


#: the warm-up steps that compile the kernels of each demo method's calls, in the demo's order
AHEAD_STEPS = {
    "gsem": ("gsem.ldsc", "gsem.commonfactor_gwas"),
    "lfmm": ("lfmm.fit", "lfmm.test"),
    "stlr": ("stlr.fit", "stlr.perturb"),
}
AHEAD_WAIT = 600.0  # seconds a step waits at most for its kernels from the compile-ahead child


def _ahead(ahead: Any, step: str) -> None:
    """Wait until the compile-ahead child has compiled (and cached) ``step``'s kernels."""
    if ahead is not None:
        ahead.wait(step, timeout=AHEAD_WAIT)


def _run_gsem(g: GsemDemo, steps: _Steps, res: Path, progress, gwas_snps: int, ahead: Any = None) -> None:
    files = [str(p) for p in g.sumstats]
    names = g.trait_names

    def munge_step():
        from polgen.gsem.munge import munge

        _ahead(ahead, "gsem.ldsc")
        munged, _drops = munge(files, str(g.hm3), trait_names=names, out=res / "munged")
        n = {
            k: (v.select(pl.len()).collect().item() if isinstance(v, pl.LazyFrame) else len(v))
            for k, v in munged.items()
        }
        return munged, "SNPs kept " + ", ".join(f"{k} {v}" for k, v in n.items())

    munged = steps.run("gsem", "munge", munge_step)

    def ldsc_step():
        from polgen.gsem.ldsc import ldsc

        cs = ldsc(munged, g.ld, trait_names=names)
        cs.save(res / "ldsc_covstruc.json")
        h2 = np.diag(np.asarray(cs.S))
        se = np.sqrt(np.diag(np.asarray(cs.V)))[[0, 3, 5]] if np.asarray(cs.V).shape[0] == 6 else None
        parts = [
            f"h2 {t} {_fmt3(h)}" + (f"±{_fmt3(se[i])}" if se is not None else "") + f" (true {_fmt3(g.h2[i])})"
            for i, (t, h) in enumerate(zip(names, h2))
        ]
        S = np.asarray(cs.S)
        rg01 = S[0, 1] / np.sqrt(S[0, 0] * S[1, 1])
        parts.append(f"rg {names[0]}-{names[1]} {_fmt3(rg01)} (true {_fmt3(g.rg[0, 1])})")
        return cs, "; ".join(parts)

    cs = steps.run("gsem", "ldsc", ldsc_step, needs=munged)

    def cf_step():
        from polgen.gsem.fit_models import commonfactor

        fit = commonfactor(cs)
        par = fit.parameters
        write_table_atomic(res / "commonfactor.parquet", par)
        load = par.filter(pl.col("op") == "=~")
        std = load["std_all"] if "std_all" in load.columns else load["est_std"]
        txt = ", ".join(f"{r} {_fmt3(v)} (true {_fmt3(t)})" for r, v, t in zip(load["rhs"], std.to_list(), g.loadings))
        return fit, "standardised loadings " + txt

    steps.run("gsem", "commonfactor", cf_step, needs=cs)

    def sumstats_step():
        from polgen.gsem.sumstats import sumstats

        out = res / "sumstats.parquet"
        lf = sumstats(
            files, str(g.reference), trait_names=names, se_logit=g.se_logit, OLS=g.OLS, linprob=g.linprob, out=out
        )
        n = (
            pl.scan_parquet(out).select(pl.len()).collect().item()
            if out.exists()
            else (lf.select(pl.len()).collect().item() if isinstance(lf, pl.LazyFrame) else len(lf))
        )
        return out, f"{n} SNPs aligned across {len(names)} traits"

    ss = steps.run("gsem", "sumstats", sumstats_step, needs=cs)

    def gwas_step():
        from polgen.gsem.gwas import commonfactor_gwas as cf_gwas

        snps = pl.scan_parquet(ss).head(gwas_snps)
        out = res / "commonfactor_gwas"
        _ahead(ahead, "gsem.commonfactor_gwas")
        r = cf_gwas(snps, cs, out=out, overwrite=True, progress=progress)
        df = r.collect() if isinstance(r, pl.LazyFrame) else r
        if not isinstance(df, pl.DataFrame):
            df = pl.scan_parquet(str(out / "*.parquet")).collect()
        sel = df.filter((pl.col("lhs") == "F1") & (pl.col("op") == "~")) if "lhs" in df.columns else df
        z = sel["z"].to_numpy() if "z" in sel.columns else np.array([])
        lam = float(np.median(z[np.isfinite(z)] ** 2) / 0.4549364) if z.size else float("nan")
        # the traits are simulated highly polygenic (mean chi^2 ~ 2): their own lambda_GC, for comparison
        first = pl.scan_parquet(ss).head(gwas_snps).collect()
        own = []
        for t in names:
            zt = (first[f"beta.{t}"] / first[f"se.{t}"]).to_numpy()
            own.append(float(np.median(zt[np.isfinite(zt)] ** 2) / 0.4549364))
        traits_lam = ", ".join(f"{t} {v:.2f}" for t, v in zip(names, own))
        return out, (
            f"{sel.height} SNPs (first {gwas_snps}); lambda_GC of the SNP effect {lam:.3f} "
            f"(polygenic traits: {traits_lam})"
        )

    steps.run("gsem", "commonfactor_gwas", gwas_step, needs=ss)


def _run_lfmm(d: LfmmDemo, steps: _Steps, res: Path, progress, ahead: Any = None) -> None:
    env = pl.read_csv(d.env, separator="\t").select("IID", "env")

    def fit_step():
        from polgen.lfmm import fit

        # K admixed populations span K - 1 axes of the centred genotypes: fit that many factors
        k_fit = max(d.K - 1, 1)
        _ahead(ahead, "lfmm.fit")
        model = fit(env, str(d.bed), K=k_fit, progress=progress)
        save = getattr(model, "save", None)
        if save is not None:
            save(res / "model")
        return model, f"K={k_fit} ({d.K} populations) on {d.n} samples x {d.p} SNPs"

    model = steps.run("lfmm", "fit", fit_step)

    def test_step():
        from polgen.lfmm import test

        _ahead(ahead, "lfmm.test")
        r = test(model, str(d.bed), out=res / "associations", overwrite=True, progress=progress)
        df = r.collect() if hasattr(r, "collect") else r
        score_col = next((c for c in ("LOG10P", "T") if c in df.columns), None)
        score = np.abs(df[score_col].to_numpy()) if score_col else np.full(df.height, np.nan)
        pos = np.zeros(df.height, dtype=bool)
        pos[d.causal] = True
        auc = _auc(score, pos)
        gif = getattr(r, "gif", {}) or {}
        gif_txt = ", ".join(f"{k} {v:.3f}" for k, v in gif.items())
        pcol = "P_CALIBRATED" if "P_CALIBRATED" in df.columns else "P"
        hits = int((df[pcol] < 0.05 / df.height).sum()) if pcol in df.columns else -1
        return r, (f"GIF {gif_txt}; AUC of the {len(d.causal)} causal loci {auc:.3f}; {hits} Bonferroni hits")

    steps.run("lfmm", "test", test_step, needs=model)


def _run_stlr(d: StlrDemo, steps: _Steps, res: Path, progress, ahead: Any = None) -> None:
    common = dict(
        lr=str(d.lr), radius=d.radius, contact_distance=d.contact_distance, layer=d.layer, cluster_key=d.cluster_key
    )
    betadir = res / "betadata"

    def fit_step():
        from polgen.stlr import fit

        _ahead(ahead, "stlr.fit")
        r = fit(str(d.h5ad), d.targets, out=betadir, grn=str(d.grn_links), overwrite=True, progress=progress, **common)
        scores = getattr(r, "scores", None)
        txt = f"{len(getattr(r, 'genes', d.targets))} genes trained"
        if isinstance(scores, pl.DataFrame) and "r2" in scores.columns:
            txt += f"; median R2 {scores['r2'].median():.3f}"
        txt += _beta_agreement(d, betadir)
        return r, txt

    fitted = steps.run("stlr", "fit", fit_step)

    def perturb_step():
        from polgen.stlr import perturb

        tf = "Pax5"
        _ahead(ahead, "stlr.perturb")
        sim = perturb(str(d.h5ad), str(betadir), tf, 0.0, **common)
        write_table_atomic(res / f"perturb_{tf}_KO.parquet", sim)
        from polgen.io.spatial import read_spatial

        base = read_spatial(d.h5ad, layer=d.layer, cluster_key=d.cluster_key)
        links = pl.read_parquet(d.grn_links)
        regulated = links.filter((pl.col("source") == tf) & pl.col("true_edge"))["target"].to_list()
        others = [t for t in d.targets if t not in regulated]

        def mean_abs_delta(genes):
            if not genes:
                return float("nan")
            after = sim.select(genes).to_numpy()
            before = base.X[:, base.gene_index(genes)]
            return float(np.mean(np.abs(after - before)))

        return sim, (
            f"{tf} knock-out: mean |delta| on its {len(regulated)} true targets "
            f"{mean_abs_delta(regulated):.3f} vs other targets {mean_abs_delta(others):.3f}"
        )

    steps.run("stlr", "perturb", perturb_step, needs=fitted)


def _beta_agreement(d: StlrDemo, betadir: Path) -> str:
    """Correlation of fitted and true betas over features named alike (TFs, simple LR pairs)."""
    est, true = [], []
    truth = d.betas.filter(pl.col("feature") != "intercept")
    for (target,), grp in truth.group_by(["target"], maintain_order=True):
        f = betadir / f"{target}_betadata.parquet"
        if not f.exists():
            continue
        bd = pl.read_parquet(f)
        if "Cluster" not in bd.columns:
            return ""
        for row in grp.iter_rows(named=True):
            col = f"beta_{row['feature']}"
            if col not in bd.columns:
                continue
            v = bd.filter(pl.col("Cluster").cast(pl.String) == row["cell_type"])[col]
            if len(v) == 0:
                v = bd.filter(pl.col("Cluster").cast(pl.String) == str(row["cluster"]))[col]
            if len(v):
                est.append(float(cast(float, v.mean())))  # polars types Series.mean() as any literal
                true.append(row["beta"])
    if len(est) < 3:
        return ""
    r = float(np.corrcoef(est, true)[0, 1])
    return f"; corr(fitted, true betas) {r:.3f} over {len(est)}"


def run_demo(
    out: str | os.PathLike = "polgen-demo",
    small: bool = False,
    progress: bool | None = None,
    seed: int | None = None,
    *,
    methods: tuple[str, ...] = ("gsem", "lfmm", "stlr"),
    gwas_snps: int | None = None,
    compile_ahead: bool | None = None,
) -> pl.DataFrame:
    """Generate the demo data for every method, run each method end to end, return a summary.

    A failing step is reported (and logged) without stopping the others; steps that need its
    result are reported as ``skipped`` (``polgen demo`` then exits non-zero).  Results go to ``out/<method>/results``;
    the summary is also written to ``out/demo_summary.parquet``.  ``seed`` shifts every generator's
    seed (None: the fixed defaults).  ``gwas_snps``: SNPs run through ``commonfactor_gwas``
    (default 200, or 50 with ``small``).  ``compile_ahead`` (None: unless ``small``): compile the
    numba kernels of the methods' calls in a child process (:class:`polgen.demo.ahead.Background`)
    while the demo generates and prepares its data; each call then loads them from the cache.
    """
    root = prepare_out_dir(out)
    steps = _Steps()
    seeds = {} if seed is None else {"gsem": int(seed), "lfmm": int(seed) + 1, "stlr": int(seed) + 2}
    gen = {
        "gsem": lambda: make_gsem_demo(root, small=small, **({"seed": seeds["gsem"]} if seeds else {})),
        "lfmm": lambda: make_lfmm_demo(root, small=small, **({"seed": seeds["lfmm"]} if seeds else {})),
        "stlr": lambda: make_stlr_demo(root, small=small, **({"seed": seeds["stlr"]} if seeds else {})),
    }
    unknown = [m for m in methods if m not in gen]
    if unknown:
        raise InputError(f"unknown demo method(s) {unknown}; choose from {list(gen)}")
    if gwas_snps is None:
        gwas_snps = 50 if small else 200
    ahead = None
    if compile_ahead if compile_ahead is not None else not small:
        from polgen.demo.ahead import Background

        ahead = Background([st for m in methods for st in AHEAD_STEPS[m]], methods)
    try:
        _run_methods(root, methods, gen, steps, progress, gwas_snps, ahead)
    finally:
        if ahead is not None:
            ahead.close()
    summary = steps.frame()
    write_table_atomic(root / "demo_summary.parquet", summary)
    from polgen.plot import demo_report

    demo_report(root)  # <out>/report.html; logs (never raises) when a picture cannot be drawn
    return summary


def _run_methods(root: Path, methods, gen, steps: _Steps, progress, gwas_snps: int, ahead) -> None:
    for method in methods:

        def generate(m: str = method) -> tuple[Any, str]:  # m bound now, not at call time (B023)
            return gen[m](), f"inputs in {root / m}"

        data = steps.run(method, "generate", generate)
        if data is None:
            continue
        res = root / method / "results"
        res.mkdir(parents=True, exist_ok=True)
        if method == "gsem":
            _run_gsem(data, steps, res, progress, gwas_snps, ahead)
        elif method == "lfmm":
            _run_lfmm(data, steps, res, progress, ahead)
        else:
            _run_stlr(data, steps, res, progress, ahead)
