"""Produce the stored R reference outputs of the gsem tests (tests/data/gsem/r/) once, with R.

    python tests/data/make/gsem_r.py GENOMICSEM_R_DIR [--only SET[,SET...]] [--out DIR] [--shared DIR]

GENOMICSEM_R_DIR is the ``R/`` directory of a checkout of the public GenomicSEM repository
(https://github.com/GenomicSEM/GenomicSEM, GPL-3.0; the stored outputs were made at the commit named
in tests/data/gsem/PROVENANCE.md).  GenomicSEM's R code is sourced from there at run time and never
copied into polgen.  Needs ``Rscript`` with lavaan, Matrix and MASS (GenomicSEM's other R
dependencies are replaced by base-R stand-ins in the R scripts beside this file).

Sets (default: all), each written under ``--out`` (default tests/data/gsem/r):

* ``usergwas``          R userGWAS and per-SNP lavaan fits on synthetic data (gsem_usergwas.R)
* ``commonfactor_gwas`` R .commonfactorGWAS_main on the PGC ANX/OCD/PTSD covstruc of the ../shared
                        fixture gwas_per_snp.json (copied as inputs) and 8 synthetic SNPs
* ``sem_lavaan``        usermodel steps with lavaan directly (gsem_sem_lavaan.R)
* ``munge_ldsc``        R munge / sumstats / ldsc on messy synthetic GWAS files (gsem_munge_ldsc.R)
* ``misc``              small base-R / Matrix / lavaan checks (seq block bounds, merge order,
                        nearPD, qchisq, lavaanify)

Inputs are written beside the outputs, so that the tests need neither R nor the generators.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def rscript(*args: str, cwd: Path | None = None, timeout: int = 1800) -> str:
    res = subprocess.run(["Rscript", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if res.returncode:
        sys.exit(f"Rscript {' '.join(args[:1])} failed:\n{res.stderr[-4000:]}")
    return res.stdout


# -- usergwas ------------------------------------------------------------------------------------
ONE = "F1 =~ T1 + T2 + T3 + T4 + T5\nF1 ~ SNP"
TWO = "F1 =~ T1 + T2 + T3\nF2 =~ T4 + T5\nF1 ~ SNP\nF2 ~ SNP"
BOUND_FM = TWO + "\nT5 ~~ a*T5\na > 0.06"
DEFINED = (TWO.replace("F1 ~ SNP", "F1 ~ b1*SNP").replace("F2 ~ SNP", "F2 ~ b2*SNP")
           + "\nd := b1 - b2\nh := b1*b2")
BASE = "F1 =~ T1 + l2*T2 + l3*T3\nF2 =~ T4 + T5\n"
EQ = BASE + "F1 ~ b*SNP\nF2 ~ b*SNP\nl2 == l3"
BOUNDS = BASE + "F1 ~ b1*SNP\nF2 ~ b2*SNP\nb1 > 0.001\nb2 < 0.002\nd := b1 - b2\nh := l2*b1"
# (case, kind 'usergwas' = R userGWAS itself | 'persnp' = per-SNP lavaan, model, estimation,
#  fix_measurement, number of SNPs); R's userGWAS costs ~0.4 s of CPU per SNP
USERGWAS_CASES = [
    ("one_dwls", "usergwas", ONE, "DWLS", False, 12),
    ("two_dwls", "usergwas", TWO, "DWLS", False, 12),
    ("defined_fm", "usergwas", DEFINED, "DWLS", True, 10),
    ("one_ml", "persnp", ONE, "ML", False, 8),
    ("two_ml", "persnp", TWO, "ML", False, 8),
    ("eq", "persnp", EQ, "DWLS", False, 8),
    ("bounds", "persnp", BOUNDS, "DWLS", False, 6),
    ("bound_fm", "usergwas", BOUND_FM, "DWLS", True, 3),
]


def synthetic(k: int = 5, n: int = 20, seed: int = 1):
    """A two-factor covstruc (S, V PD, I with cross-trait intercepts) and n SNPs with effects
    through the factors plus noise."""
    rng = np.random.default_rng(seed)
    names = [f"T{i + 1}" for i in range(k)]
    lam = np.zeros((k, 2))
    h = k // 2 + 1
    lam[:h, 0] = rng.uniform(0.25, 0.45, h)
    lam[h:, 1] = rng.uniform(0.25, 0.45, k - h)
    phi = np.array([[1.0, 0.4], [0.4, 1.0]])
    S = lam @ phi @ lam.T + np.diag(rng.uniform(0.05, 0.15, k))
    kst = k * (k + 1) // 2
    A = rng.normal(size=(kst, kst)) * 0.002
    V = A @ A.T + np.diag(rng.uniform(2e-5, 6e-5, kst))
    I = np.eye(k) * 1.02 + 0.05 * (np.ones((k, k)) - np.eye(k))
    maf = rng.uniform(0.05, 0.5, n)
    se = rng.uniform(0.004, 0.01, (n, k))
    beta = rng.normal(size=(n, k)) * 0.012 + (lam @ rng.normal(size=(2, n)) * 0.02).T
    cols = {"SNP": [f"rs{i}" for i in range(n)], "CHR": ["1"] * n, "BP": list(range(1000, 1000 + n)),
            "MAF": maf, "A1": ["A"] * n, "A2": ["G"] * n}
    for j, t in enumerate(names):
        cols[f"beta.{t}"] = beta[:, j]
        cols[f"se.{t}"] = se[:, j]
    return {"S": S, "V": V, "I": I, "trait_names": names}, pl.DataFrame(cols)


def make_usergwas(src: Path, out: Path, shared: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cov, snps = synthetic()
    names = cov["trait_names"]
    V = cov["V"]
    np.savetxt(out / "S.csv", cov["S"], delimiter=",", header=",".join(names), comments="", fmt="%.17g")
    np.savetxt(out / "V.csv", V, delimiter=",", header=",".join(f"V{i}" for i in range(V.shape[0])),
               comments="", fmt="%.17g")
    np.savetxt(out / "I.csv", cov["I"], delimiter=",", header=",".join(names), comments="", fmt="%.17g")
    snps.write_csv(out / "snps.csv", float_precision=17)
    with open(out / "cases.tsv", "w") as fh:
        for case, kind, model, est, fm, n in USERGWAS_CASES:
            fh.write(f"{case}\t{kind}\t{model.replace(chr(10), chr(92) + 'n')}\t{est}\t"
                     f"{'TRUE' if fm else 'FALSE'}\t{n}\n")
    rscript(str(HERE / "gsem_usergwas.R"), str(src), str(out))


# -- commonfactor_gwas ---------------------------------------------------------------------------
# SNP, MAF, betas (ANX, OCD, PTSD), SEs: synthetic (bench/gsem_gwas.py's generator, seed 1);
# rs774, rs785 and rs1190 are SNPs an earlier multi-start fit reported as not converged
CF_SNPS = [
    ("rs0", 0.0634085384650584,
     (-0.02743830994122556, -0.10033241996717326, -0.019021706547073837),
     (0.030472864988010266, 0.04801854785303741, 0.01576638450878535)),
    ("rs1", 0.04837789746964792,
     (-0.003212097114215036, 0.027280013998788096, 0.021146057707666165),
     (0.04794597788548976, 0.022473258080419417, 0.02693305795890303)),
    ("rs2", 0.15907554192899517,
     (0.018680370990562932, 0.0051704327303414635, 0.010261901707242584),
     (0.04310810375281767, 0.026367965454766454, 0.03198374750692238)),
    ("rs3", 0.4246545222746452,
     (-0.010656108058811911, -0.10338865257134679, -0.059681933501996604),
     (0.011102364529722734, 0.040140524346992265, 0.03152573252877113)),
    ("rs4", 0.4213135707303099,
     (-0.014576537517814313, 0.028741100664836827, 0.040495465268276354),
     (0.023189268659963687, 0.04153714813713617, 0.0221277931716658)),
    ("rs774", 0.4607861817462758,
     (-0.02669511129300882, 0.01788338894119944, -0.011555729886409372),
     (0.04933535488805266, 0.03413421597063573, 0.03460697792133108)),
    ("rs785", 0.05544343137201351,
     (-0.006974747629226935, 0.0037864928286659534, -0.04685765069467197),
     (0.015231613675782834, 0.012977142079943632, 0.025818887542335245)),
    ("rs1190", 0.15415194135865717,
     (-0.03739503162875061, 0.011573130282322135, -0.07359551765181095),
     (0.04101057722336372, 0.03952518510884974, 0.049305016713854274)),
]


def make_commonfactor_gwas(src: Path, out: Path, shared: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    d = json.loads((shared / "fixtures" / "gsem" / "gwas_per_snp.json").read_text())
    traits = d["trait_names"]
    k = len(traits)
    fmt = lambda a: " ".join(repr(float(x)) for x in np.asarray(a, dtype=np.float64).flatten(order="F"))  # noqa: E731
    (out / "k.txt").write_text(str(k))
    (out / "S.txt").write_text(fmt(d["s"]))
    (out / "V.txt").write_text(fmt(d["v"]))
    (out / "I.txt").write_text(fmt(d["i_mat"]))
    (out / "traits.txt").write_text("\n".join(traits) + "\n")
    rows = []
    for i, (name, maf, b, s) in enumerate(CF_SNPS):
        r = {"SNP": name, "CHR": "1", "BP": 100 * i + 1, "MAF": maf, "A1": "A", "A2": "G"}
        for t, bb, ss in zip(traits, b, s):
            r[f"beta.{t}"] = bb
            r[f"se.{t}"] = ss
        rows.append(r)
    pl.DataFrame(rows).write_csv(out / "snps.csv", float_precision=None)
    rscript(str(HERE / "gsem_commonfactor_gwas.R"), str(src), str(out), str(out / "r_out.csv"))


# -- sem_lavaan ----------------------------------------------------------------------------------
SEM_MODELS = {
    "cross_loading_defined": ("F1 =~ NA*V1 + a*V2 + V3\nF2 =~ NA*V3 + b*V4 + V5\nF1 ~~ 1*F1\nF2 ~~ 1*F2\n"
                              "F1 ~~ F2\nab := a*b\nr := ab/(1 + a^2)"),
    "structural_marker": "F1 =~ V1 + V2 + V3\nF2 =~ V4 + V5\nF2 ~ F1\nV1 ~~ V4",
    "observed_outcome": "F1 =~ NA*V1 + V2 + V3 + V4\nF1 ~~ 1*F1\nV5 ~ c*F1\nc2 := c^2",
    # traits that only predict: lavaan's DWLS resolves fixed.x to FALSE (free variances/covariance)
    "trait_predictors": "F1 =~ V1 + V2 + V3\nF1 ~ V4 + V5",
    # six traits
    "higher_order": "F1 =~ V1 + V2\nF2 =~ V3 + V4\nF3 =~ V5 + V6\nG =~ NA*F1 + F2 + F3\nG ~~ 1*G",
    "equal_labels": "F1 =~ NA*V1 + a*V2 + a*V3 + V4 + V5 + V6\nF1 ~~ 1*F1",
    "linear_constraint": "F1 =~ NA*V1 + a*V2 + b*V3 + V4 + V5 + V6\nF1 ~~ 1*F1\na == b + 0.05",
    "nonlinear_constraint": ("F1 =~ NA*V1 + a*V2\nF2 =~ NA*V3 + b*V4\nF3 =~ NA*V5 + V6\nF1~~1*F1\nF2~~1*F2\n"
                             "F3~~1*F3\na == b^2\nd := a - b"),
    "inequality": ("F1 =~ NA*V1 + a*V2\nF2 =~ NA*V3 + b*V4\nF3 =~ NA*V5 + V6\nF1~~1*F1\nF2~~1*F2\n"
                   "F3~~1*F3\na > b + 0.15"),
    # a Heywood case (V3 wants -0.15) with GenomicSEM's fix_resid bound: lavaan's inequality constraint
    "bounded_heywood": ("F1 =~ NA*V1 + V2\nF2 =~ NA*V3 + V4\nF1 ~~ 1*F1\nF2 ~~ 1*F2\n"
                        "V3 ~~ abcd*V3\nabcd > .0001"),
}
SEM_SIX = {"higher_order", "equal_labels", "linear_constraint", "nonlinear_constraint", "inequality"}
SEM_FOUR = {"bounded_heywood"}
QF_MODEL = "F1 =~ NA*V1 + V2\nF2 =~ NA*V3 + V4\nF3 =~ NA*V5 + V6 + V4\nF1~~1*F1\nF2~~1*F2\nF3~~1*F3"


def _sem_data6():
    rng = np.random.default_rng(7)
    L = np.array([[.7, 0, 0], [.6, 0, 0], [0, .65, 0], [0, .55, 0], [0, 0, .6], [0, 0, .5]])
    phi = np.array([[1, .3, .2], [.3, 1, .35], [.2, .35, 1]])
    S = L @ phi @ L.T + np.diag([.3, .4, .35, .45, .4, .5])
    E = rng.normal(scale=0.02, size=(6, 6))
    S = S + (E + E.T) / 2
    A = rng.normal(size=(21, 21)) * 0.0003
    V = np.diag(rng.uniform(0.0005, 0.002, 21)) + A @ A.T
    return S, V


def _sem_data4():
    S = np.array([[0.6, 0.42, 0.1, 0.05], [0.42, 0.5, 0.08, 0.04], [0.1, 0.08, 0.45, 0.3], [0.05, 0.04, 0.3, 0.55]])
    rng = np.random.default_rng(9)
    A = rng.normal(size=(10, 10)) * 0.0003
    return S, np.eye(10) * 1e-3 + A @ A.T


def _sem_data(name: str = ""):
    if name in SEM_SIX:
        return _sem_data6()
    if name in SEM_FOUR:
        return _sem_data4()
    rng = np.random.default_rng(5)
    L = np.array([[.7, 0], [.6, 0], [.3, .5], [0, .6], [0, .5]])
    phi = np.array([[1, .4], [.4, 1]])
    S = L @ phi @ L.T + np.diag([.3, .4, .35, .3, .45])
    E = rng.normal(scale=0.02, size=(5, 5))
    S = S + (E + E.T) / 2
    A = rng.normal(size=(15, 15)) * 0.0003
    V = np.diag(rng.uniform(0.0005, 0.002, 15)) + A @ A.T
    return S, V


def make_sem_lavaan(src: Path, out: Path, shared: Path) -> None:
    cases = {name: (*_sem_data(name), SEM_MODELS[name], "DWLS", "") for name in SEM_MODELS}
    cases["ml_structural"] = (*_sem_data(), SEM_MODELS["structural_marker"], "ML", "")
    cases["ml_fixed_x"] = (*_sem_data(), SEM_MODELS["trait_predictors"], "ML", "")
    cases["q_factor"] = (*_sem_data6(), QF_MODEL, "DWLS", "QF")
    fmt = lambda a: " ".join(repr(float(x)) for x in np.asarray(a).ravel(order="F"))  # noqa: E731
    lines = []
    for name, (S, V, model, est, extra) in cases.items():
        lines += [name, fmt(S), fmt(V), model.replace("\n", "\\n"), str(S.shape[0]), est, extra or "-"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "cases.txt").write_text("\n".join(lines) + "\n")
        stdout = rscript(str(HERE / "gsem_sem_lavaan.R"), str(Path(tmp) / "cases.txt"))
    r: dict[str, dict] = {}
    cur = None
    for line in stdout.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "##CASE":
            cur = r.setdefault(parts[1], {})
        elif cur is not None:
            cur[parts[0]] = parts[1:]
    data = {"five": _sem_data(), "six": _sem_data6(), "four": _sem_data4()}
    key = lambda S: {5: "five", 6: "six", 4: "four"}[S.shape[0]]  # noqa: E731
    for name, (S, V, *_) in cases.items():
        assert np.array_equal(S, data[key(S)][0]) and np.array_equal(V, data[key(S)][1]), name
    doc = {"data": {k: {"S": S.tolist(), "V": V.tolist()} for k, (S, V) in data.items()},
           "cases": {name: {"data": key(S), "model": model, "estimation": est, "extra": extra, "r": r[name]}
                     for name, (S, V, model, est, extra) in cases.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sem_lavaan.json").write_text(json.dumps(doc) + "\n")


# -- munge_ldsc ----------------------------------------------------------------------------------
LDSC_CASES = [(40, False), (200, True)]
MUNGE_LDSC_SNPS = 3000


def make_munge_ldsc(src: Path, out: Path, shared: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_gsem_ldsc import simulate  # the LDSC-model simulator the ldsc tests share

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        sim = simulate(d / "sim", n=MUNGE_LDSC_SNPS, chroms=2, seed=3)
        rng = np.random.default_rng(9)
        hm3 = pl.read_csv(sim["hm3"], separator="\t")
        with gzip.open(d / "hm3.snplist.gz", "wb") as fh:
            fh.write(Path(sim["hm3"]).read_bytes())
        # LD scores with 3 decimals, as LDSC writes them (and a smaller file)
        (d / "ld").mkdir()
        for f in sorted(sim["ld"].iterdir()):
            if f.name.endswith(".ldscore.gz"):
                ld = pl.read_csv(f, separator="\t").with_columns(pl.col("L2").round(3))
                with gzip.open(d / "ld" / f.name, "wb") as fh:
                    fh.write(ld.write_csv(separator="\t", float_precision=None).encode())
            else:
                shutil.copy(f, d / "ld" / f.name)
        ref = hm3.with_columns(CHR=pl.lit(1), BP=pl.int_range(pl.len()) + 1,
                               MAF=pl.Series(rng.uniform(0.003, 0.5, hm3.height).round(4)))
        with gzip.open(d / "ref.txt.gz", "wb") as fh:
            fh.write(ref.select("SNP", "CHR", "BP", "MAF", "A1", "A2").write_csv(separator="\t").encode())
        # raw GWAS files with R-relevant mess: NA P/effects, lower-case and non-ACGT alleles, P = 1,
        # duplicated ids, an odds-ratio file, INFO values either side of the filters
        for i, f in enumerate(sim["files"]):
            df = pl.read_csv(f, separator="\t", infer_schema_length=0)
            # 6 significant digits, as GWAS software writes them (and smaller files)
            df = df.with_columns(pl.Series(c, [f"{float(x):.6g}" for x in df[c]])
                                 for c in ("BETA", "SE", "P", "MAF"))
            n = df.height
            idx = rng.permutation(n)
            cols = {c: df[c].to_list() for c in ("SNP", "A1", "A2", "BETA", "P")}
            for j in idx[:20]:
                cols["P"][j] = "NA"
            for j in idx[20:40]:
                cols["BETA"][j] = "NA"
            for j in idx[40:60]:
                cols["A1"][j] = cols["A1"][j].lower()
            for j in idx[60:70]:
                cols["A2"][j] = "N"
            for j in idx[70:80]:
                cols["P"][j] = "1"
            for j in idx[80:90]:
                cols["SNP"][j] = cols["SNP"][idx[90]]
            df = df.with_columns(INFO=pl.Series(rng.uniform(0.8, 1.0, n).round(3).astype(str)),
                                 **{c: pl.Series(v) for c, v in cols.items()})
            if i == 2:
                df = df.with_columns(
                    OR=pl.col("BETA").cast(pl.Float64, strict=False).exp().cast(pl.String)).drop("BETA")
            with gzip.open(d / f"raw{i}.txt.gz", "wb") as fh:
                fh.write(df.write_csv(separator="\t", null_value="NA").encode())
        # R's munge first (its outputs are the ldsc inputs below)
        rscript(str(HERE / "gsem_munge_ldsc.R"), str(src), str(d), "munge")
        # ldsc inputs: R's munged files with shuffled rows, per-SNP N and chi^2 outliers in B
        for nb, _ in LDSC_CASES:
            rng = np.random.default_rng(nb)
            for t in ("A", "B", "C"):
                df = pl.read_csv(d / f"{t}.sumstats.gz", separator="\t")
                df = df.sample(fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 30)))
                if t == "B":
                    df = df.with_columns(
                        N=pl.Series(rng.uniform(30_000, 50_000, df.height).round()),
                        Z=pl.when(pl.int_range(pl.len()) < 15).then(pl.col("Z") * 9).otherwise(pl.col("Z")))
                with gzip.open(d / f"{t}.{nb}.sumstats.gz", "wb") as fh:
                    fh.write(df.write_csv(separator="\t", float_precision=None).encode())
        (d / "ldsc_cases.tsv").write_text("nb\tprev\n" + "".join(f"{nb}\t{'TRUE' if p else 'FALSE'}\n"
                                                                for nb, p in LDSC_CASES))
        rscript(str(HERE / "gsem_munge_ldsc.R"), str(src), str(d), "ldsc")
        # keep: inputs, R outputs (gzip the sumstats table); not R's logs
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copytree(d / "ld", out / "ld")
        for f in ["hm3.snplist.gz", "ref.txt.gz", "ldsc_cases.tsv", *(f"raw{i}.txt.gz" for i in range(3)),
                  *(f"{t}.sumstats.gz" for t in "ABC"),
                  *(f"{t}.{nb}.sumstats.gz" for nb, _ in LDSC_CASES for t in "ABC"),
                  *(f"ldsc_{nb}.txt" for nb, _ in LDSC_CASES)]:
            shutil.copy(d / f, out / f)
        with gzip.open(out / "sumstats_R.tsv.gz", "wb") as fh:
            fh.write((d / "sumstats_R.tsv").read_bytes())


# -- misc ----------------------------------------------------------------------------------------
LAVAAN_OPTS = ("auto.var=TRUE, auto.fix.first=TRUE, auto.fix.single=TRUE, auto.cov.lv.x=TRUE, "
               "auto.cov.y=TRUE, fixed.x=TRUE, meanstructure=FALSE")
SYNTAX_MODELS = {
    "one_factor": "F1 =~ NA*V1 + V2 + V3\nF1 ~~ 1*F1\nV1 ~~ V1\nV2 ~~ V2\nV3 ~~ V3",
    "two_factor_heywood": "\nF1 =~ NA*V1 + V2\nF2 =~ NA*V3 + V4\nF1 ~~ 1*F1\nF2 ~~ 1*F2\nF1 ~~ F2\n"
                          "V1 ~~ V1\nV2 ~~ V2\nV3 ~~ V3\nV4 ~~ V4\n",
    "marker_labels_single": "F1 =~ a*V1 + a*V2 + V3\nF2 =~ V4 + V5\nF3 =~ V6\nV1 ~~ V2",
    "gwas_like": "F1 =~ V1 + V2 + V3 # comment\nF2 =~ V4 +\n   V5 + V6\nF2 ~ b*F1; F1 ~ SNP\nF2 ~ SNP",
    "two_outcomes": "F1 =~ NA*V1 + V2 + V3\nF2 =~ NA*V4 + V5 + V6\nF1 ~ SNP\nF2 ~ SNP\nF1 ~~ 1*F1\nF2 ~~ 1*F2",
    "multi_lhs": "F1 =~ V1 + V2 + V3\nV4 + V5 ~ F1 + SNP",
    "start_bounds": "F1 =~ start(0.6)*V1 + NA*V1 + lower(0)*V2 + V3\nV3 ~~ upper(1)*V3",
    "observed_regression": "V1 ~ V2 + V3\nV2 ~~ V3",
}
R_NEARPD_SEEDED = """
library(Matrix)
set.seed(11)
for (k in c(3, 5, 8)) {
  x <- matrix(rnorm(k*k), k); x <- (x + t(x))/2; diag(x) <- abs(diag(x)) + 0.5
  m <- as.matrix(nearPD(x, corr = FALSE)$mat)
  cat(k, sprintf("%.17g", x), sprintf("%.17g", m), "\\n")
}
"""


def make_misc(src: Path, out: Path, shared: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # seq() block boundaries of ldsc's jackknife
    bb = [(1000, 20), (7919, 200), (123457, 200), (999, 37), (4001, 200)]
    code = "; ".join(f"cat(sprintf('%.17g', floor(seq(from=1,to={n},length.out={nb}+1))), '\\n')" for n, nb in bb)
    lines = rscript("-e", code).strip().splitlines()
    (out / "block_bounds.json").write_text(json.dumps(
        {"cases": [{"n": n, "n_blocks": nb, "from": [int(float(x)) for x in ln.split()]}
                   for (n, nb), ln in zip(bb, lines)]}) + "\n")
    # merge(sort = FALSE) row order with duplicated keys
    rng = np.random.default_rng(4)
    left = pl.DataFrame({"SNP": [f"k{i}" for i in rng.integers(0, 300, 2000)], "v": np.arange(2000)})
    right = pl.DataFrame({"SNP": [f"k{i}" for i in rng.integers(0, 400, 700)], "w": np.arange(700)})
    with tempfile.TemporaryDirectory() as tmp:
        left.write_csv(Path(tmp) / "l.csv")
        right.write_csv(Path(tmp) / "r.csv")
        txt = rscript("-e", 'l <- read.csv("l.csv"); r <- read.csv("r.csv"); '
                      'm <- merge(l, r, by = "SNP", sort = FALSE); cat(m$v, "\\n"); cat(m$w, "\\n")', cwd=Path(tmp))
    rv, rw = ([int(x) for x in line.split()] for line in txt.strip().splitlines())
    key = lambda s: [int(x[1:]) for x in s]  # noqa: E731  ("k17" -> 17)
    (out / "merge_order.json").write_text(json.dumps(
        {"SNP": "k<key>", "left_keys": key(left["SNP"]), "right_keys": key(right["SNP"]), "v": rv, "w": rw},
        separators=(",", ":")) + "\n")
    # Matrix::nearPD(x, corr = FALSE): R-seeded matrices, and the matrices of test_gsem_gwas
    seeded = []
    for ln in rscript("-e", R_NEARPD_SEEDED).strip().splitlines():
        parts = ln.split()
        k = int(parts[0])
        vals = [float(x) for x in parts[1:]]
        seeded.append({"k": k, "x": vals[:k * k], "nearpd": vals[k * k:]})
    fixture = json.loads((shared / "fixtures" / "gsem" / "near_pd.json").read_text())
    mats = [np.array(fixture["input"], dtype=np.float64),
            np.array([[2, 1.9, 0.3], [1.9, 1.5, 2.1], [0.3, 2.1, 1.2]]),
            np.array([[0.1, 0.2, 0.01, 0.0], [0.2, 0.15, 0.05, 0.0], [0.01, 0.05, 0.3, 0.1],
                      [0.0, 0.0, 0.1, -0.01]])]
    given = []
    for x in mats:
        n = x.shape[0]
        vals = ",".join(repr(float(v)) for v in x.flatten(order="F"))
        txt = rscript("-e", f"suppressMessages(library(Matrix)); x <- matrix(c({vals}), {n}); "
                      "cat(sprintf('%.17g', as.matrix(nearPD(x, corr=FALSE)$mat)), sep=' ')")
        given.append({"k": n, "x": x.flatten(order="F").tolist(), "nearpd": [float(v) for v in txt.split()]})
    (out / "nearpd.json").write_text(json.dumps({"column_major": True, "seeded": seeded, "given": given}) + "\n")
    # sqrt(qchisq(p, 1, lower.tail = FALSE))
    p = [0.7, 0.05, 1e-12, 1e-100, 1e-250, 1e-307]
    txt = rscript("-e", "p <- c(" + ",".join(repr(x) for x in p) + "); "
                  "cat(sprintf('%.17g', sqrt(qchisq(p, 1, lower.tail = FALSE))), sep='\\n')")
    (out / "qchisq.json").write_text(json.dumps({"p": p, "z": [float(x) for x in txt.split()]}) + "\n")
    # lavaanify() parameter tables
    script = ["library(lavaan)"]
    for name, text in SYNTAX_MODELS.items():
        esc = text.replace("\\", "\\\\").replace("'", "\\'")
        script.append(f"pt <- lavaanify('{esc}', {LAVAAN_OPTS}); pt <- pt[pt$op %in% c('=~','~','~~'),]")
        script.append(f"cat('##{name}\\n'); pt$ustart[is.na(pt$ustart)] <- -999; "
                      "write.table(pt[, c('lhs','op','rhs','free','ustart','exo','user')], sep='\\t', "
                      "quote=FALSE, row.names=FALSE, col.names=FALSE)")
    txt = rscript("-e", "\n".join(script))
    tables: dict = {}
    cur = None
    for line in txt.splitlines():
        if line.startswith("##"):
            cur = tables.setdefault(line[2:], {k: [] for k in ("lhs", "op", "rhs", "free", "ustart", "exo", "user")})
        elif cur is not None and line.strip():
            f = line.split("\t")
            for k, v in zip(("lhs", "op", "rhs"), f[:3]):
                cur[k].append(v)
            cur["free"].append(int(f[3]))
            cur["ustart"].append(float(f[4]))
            cur["exo"].append(int(f[5]))
            cur["user"].append(int(f[6]))
    (out / "lavaanify.json").write_text(json.dumps(
        {"options": LAVAAN_OPTS, "models": SYNTAX_MODELS, "partables": tables}, indent=1) + "\n")


SETS = {"usergwas": make_usergwas, "commonfactor_gwas": make_commonfactor_gwas,
        "sem_lavaan": make_sem_lavaan, "munge_ldsc": make_munge_ldsc, "misc": make_misc}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("genomicsem_r", type=Path, help="R/ directory of a GenomicSEM checkout")
    ap.add_argument("--only", default=",".join(SETS), help="comma-separated sets (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "gsem" / "r")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared",
                    help="../shared (for the fixture inputs copied by commonfactor_gwas and misc)")
    a = ap.parse_args(argv)
    if not (a.genomicsem_r / "userGWAS.R").exists():
        sys.exit(f"{a.genomicsem_r} does not hold GenomicSEM's R sources (userGWAS.R missing)")
    for name in a.only.split(","):
        target = a.out / name
        SETS[name](a.genomicsem_r.resolve(), target.resolve(), a.shared)
        print(f"{name}: wrote {target}")


if __name__ == "__main__":
    main()
