"""Benchmark polgen's ``gsem.enrich`` against the Rust GenomicSEM port's ``enrich_model`` (issue 11).

    python bench/gsem_enrich.py [--copies 50] [--reps 3]

Inputs: polgen's ``s_ldsc`` on R's stored inputs (tests/data/gsem/r/sldsc_enrich, R's ``cont`` and
``extra`` cases; polgen reproduces R's s_ldsc there to 1e-13), so R's own ``enrich`` outputs
(``r_out.json``) are the reference for both programs.

The port's API: ``genomicsem.enrich_model(s_covstruc, model, params, fix, std_lv, tau, toler,
fixparam)`` (pure Python over its Rust ``usermodel``) takes a dict ``S_baseline``, ``S_annot``,
``V_annot`` (lists, baseline first), ``annotation_names``, ``m_annot``, ``m_total``; it fits the model
to the baseline, then refits it to every annotation with the baseline's ``~`` rows
(``fix="regressions"``) or ``=~`` rows (``fix="loadings"``) fixed and everything else free, and
returns each annotation's parameter rows (``est``, ``se``; no enrichment ratio, no selection of
binary annotations, no smoothing).  R's ``fix="regressions"`` instead fixes every parameter of the
baseline fit but the variances/covariances and ``params``: for ``F1 =~ T1 + T2 + T3; F1 ~~ F1`` that
is the port's ``fix="loadings"``; for a model of covariances only (``T1 ~~ T2``) any ``fix`` of the
port frees the same parameters as R.  The enrichment is formed from the port's estimates as R forms
it, ``(est_annotation / est_baseline) / prop`` and ``SE / |est_baseline| / prop``, and compared with R.

Timing: the ``cont`` covstruc's 3 annotations (beside the baseline) repeated ``--copies`` times
(3 x copies annotations), each program in its own process, CPU seconds of the call (best of
``--reps``), numba kernels and the port's module loaded before.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import time
from pathlib import Path

import numpy as np

REF_PY = Path(os.environ.get("GENOMICSEM_REF", "/tmp/genomicsem-ref")) / "bin" / "python"
R_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsem" / "r" / "sldsc_enrich"

# (R enrich case, s_ldsc case, model, param, R's fix, the port's fix freeing the same parameters)
CASES = {
    "var": ("cont", "F1 =~ T1 + T2 + T3\nF1 ~~ F1", "F1~~F1", "regressions", "loadings"),
    "rg": ("extra", "T1 ~~ T2", "T1~~T2", "regressions", "regressions"),
}
# the port's enrich_model builds covstrucs without trait names: its usermodel then knows the traits
# only as V1..Vk (a model naming T1 fits nothing and returns zeros), so the port gets V-names
_PORT_NAMES = {"T1": "V1", "T2": "V2", "T3": "V3"}


def _port_syntax(text: str) -> str:
    for a, b in _PORT_NAMES.items():
        text = text.replace(a, b)
    return text


_REF_SCRIPT = r"""
import json, sys, time, resource
import numpy as np
import genomicsem as gs
cfg = json.load(open(sys.argv[1]))
sc = cfg["covstruc"]
sc = {**sc, "S_baseline": np.asarray(sc["S_baseline"]), "S_annot": [np.asarray(s) for s in sc["S_annot"]],
      "V_annot": [np.asarray(v) for v in sc["V_annot"]]}
best, out = None, None
for _ in range(cfg["reps"]):
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    rows = gs.enrich_model(sc, cfg["model"], params=[cfg["param"]], fix=cfg["fix"])
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    best = cpu if best is None else min(best, cpu)
    out = rows
print(json.dumps({"cpu": best, "rows": [{k: (v if isinstance(v, (str, int, float)) or v is None else str(v))
                                         for k, v in r.items()} for r in out]}))
"""


def polgen_covstrucs() -> dict:
    from polgen.gsem.stratified import s_ldsc

    cwd = os.getcwd()
    os.chdir(R_DIR)  # R names the extra annotation set by its prefix as given
    try:
        common = dict(wld="weights/weights.", frq="frq/1000G.", trait_names=["T1", "T2", "T3"])
        files = [f"T{i}.sumstats.gz" for i in (1, 2, 3)]
        return {
            "cont": s_ldsc(files, ld="annot/baseline.", n_blocks=20, exclude_cont=True, **common),
            "extra": s_ldsc(files, ld=["annot/baseline.", "extra/extra."], n_blocks=25, exclude_cont=True, **common),
        }
    finally:
        os.chdir(cwd)


def port_dict(sc) -> dict:
    return {
        "S_baseline": sc.S[0].tolist(),
        "S_annot": [s.tolist() for s in sc.S],
        "V_annot": [v.tolist() for v in sc.V],
        "annotation_names": list(sc.annotations),
        "m_annot": [float(x) for x in sc.m],
        "m_total": float(sc.m[0]),
    }


def run_port(covstruc: dict, model: str, param: str, fix: str, reps: int, work: Path) -> dict:
    f = work / "enrich_port_input.json"
    f.write_text(json.dumps({"covstruc": covstruc, "model": model, "param": param, "fix": fix, "reps": reps}))
    p = subprocess.run([str(REF_PY), "-c", _REF_SCRIPT, str(f)], capture_output=True, text=True)
    if p.returncode:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def port_enrichment(rows: list[dict], param: str, names: list[str], prop: np.ndarray) -> dict[str, tuple]:
    """The port's per-annotation estimates turned into R's enrichment and SE."""
    est = {}
    for r in rows:
        if "est" in r and f"{r['lhs']}{r['op']}{r['rhs']}" == param:
            est[r["annotation"]] = (float(r["est"]), float(r.get("se", np.nan)))
    base = est.get(names[0], (np.nan, np.nan))[0]
    return {
        a: (e / base / prop[i], s / abs(base) / prop[i])
        for i, a in enumerate(names)
        if (e_s := est.get(a))
        for e, s in [e_s]
    }


def r_parity(work: Path, fits: dict) -> None:
    from polgen.gsem.enrichment import enrich

    R = json.loads((R_DIR / "r_out.json").read_text())["enrich"]
    for case, (sl, model, param, fix_r, fix_port) in CASES.items():
        sc = fits[sl]
        ref = R[case]
        r_ann, r_enr, r_se = ref["ann.1"], np.array(ref["enr.1"], float), np.array(ref["enr_se.1"], float)
        pg = enrich(sc, model, param, fix=fix_r).tables()[0]  # type: ignore[arg-type]
        pg_e = dict(zip(pg["Annotation"], pg["Enrichment"]))
        rel_pg = max(abs(pg_e[a] / e - 1) for a, e in zip(r_ann, r_enr))
        line = f"{case} ({model!r}, {param}, R fix={fix_r}): polgen vs R enrichment max rel {rel_pg:.1e}"
        if REF_PY.exists():
            out = run_port(port_dict(sc), _port_syntax(model), _port_syntax(param), fix_port, 1, work)
            if "error" in out:
                line += f"; port failed: {out['error']}"
            else:
                pe = port_enrichment(out["rows"], _port_syntax(param), list(sc.annotations), np.asarray(sc.prop))
                base = [r.get("est") for r in out["rows"] if r.get("annotation") == sc.annotations[0]]
                line += f"; port's baseline estimate {base}, R's {ref['base_est']}"
                d_e = [abs(pe[a][0] / e - 1) for a, e in zip(r_ann, r_enr) if a in pe]
                d_s = [abs(pe[a][1] / s - 1) for a, s in zip(r_ann, r_se) if a in pe]
                line += (
                    f"; port (fix={fix_port}) vs R: enrichment max rel {max(d_e):.1e}, SE {max(d_s):.1e} "
                    f"over {len(d_e)} of {len(r_ann)} annotations; port also returns "
                    f"{len(pe) - len(d_e)} annotation(s) R does not analyse"
                )
        print(line)


def _tiled(sc, copies: int):
    from polgen.gsem.stratified import StratifiedCovStruc

    idx = [0] + [1 + (j % (len(sc.S) - 1)) for j in range((len(sc.S) - 1) * copies)]
    names = [sc.annotations[0]] + [f"{sc.annotations[i]}_{j}" for j, i in enumerate(idx[1:])]
    return StratifiedCovStruc(
        S=[sc.S[i] for i in idx], V=[sc.V[i] for i in idx], S_Tau=[sc.S_Tau[i] for i in idx],
        V_Tau=[sc.V_Tau[i] for i in idx], I=sc.I, N=sc.N, m=np.asarray([sc.m[i] for i in idx]),
        annotations=names, trait_names=sc.trait_names, prop=np.asarray([sc.prop[i] for i in idx]),
        select_names=[n.removesuffix("L2") for n in names[1:]],
        select=np.asarray([sc.select[i - 1] for i in idx[1:]]),
    )  # fmt: skip


def timing(work: Path, fits: dict, copies: int, reps: int) -> None:
    from polgen.gsem.enrichment import enrich

    for case, (sl, model, param, fix_r, fix_port) in CASES.items():
        sc = _tiled(fits[sl], copies)
        n_ann = len(sc.annotations) - 1
        enrich(fits[sl], model, param, fix=fix_r)  # type: ignore[arg-type]  # load numba kernels
        best = None
        for _ in range(reps):
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            res = enrich(sc, model, param, fix=fix_r)  # type: ignore[arg-type]
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
            best = cpu if best is None else min(best, cpu)
        assert best is not None
        print(f"{case}: polgen enrich ({n_ann} annotations + baseline, {res.enrichment.height} rows analysed): "
              f"{best:.3f} s CPU (best of {reps}); load {os.getloadavg()[0]:.1f}")  # fmt: skip
        if not REF_PY.exists():
            continue
        out = run_port(port_dict(sc), _port_syntax(model), _port_syntax(param), fix_port, reps, work)
        if "error" in out:
            print(f"{case}: port enrich_model failed: {out['error']}")
            continue
        print(f"{case}: genomicsem (Rust) enrich_model (fix={fix_port}, every annotation): {out['cpu']:.3f} s CPU "
              f"(best of {reps}); load {os.getloadavg()[0]:.1f}; CPU ratio polgen / port "
              f"{best / max(out['cpu'], 1e-9):.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/polgen-bench-enrich"))
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    fits = polgen_covstrucs()
    print(f"polgen s_ldsc on R's inputs: {time.perf_counter() - t:.1f} s")
    r_parity(a.dir, fits)
    timing(a.dir, fits, a.copies, a.reps)


if __name__ == "__main__":
    main()
