"""Every method's output matches its declaration in polgen.schema, and the README lists them.

Each method runs once on the small deterministic demo data (module-scoped fixtures) and its
returned frame and written parquet files are validated with :func:`polgen.schema.validate`.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from polgen import schema
from polgen.errors import SchemaError
from polgen.schema import OUTPUTS, output_reference_markdown, validate

ROOT = Path(__file__).resolve().parents[1]

# every declared kind is exercised by a test below (a new kind needs its test)
COVERED: set[str] = set()


def check(obj, kind: str) -> None:
    COVERED.add(kind)
    validate(obj, kind)


def _eager(x) -> pl.DataFrame:
    return x.collect() if isinstance(x, pl.LazyFrame) else x


# -- fixtures: the small demo inputs, each method run once ------------------------------------------
@pytest.fixture(scope="module")
def gsem_run(tmp_path_factory):
    from polgen.demo import make_gsem_demo
    from polgen.gsem import ldsc, munge, sumstats

    d = tmp_path_factory.mktemp("gsem_schema")
    g = make_gsem_demo(d / "in", small=True)
    files = [str(p) for p in g.sumstats]
    munged, dropped = munge(files, str(g.hm3), trait_names=g.trait_names, out=d / "munged")
    cs = ldsc(munged, g.ld, trait_names=g.trait_names)
    ss_path = d / "sumstats.parquet"
    ss, summary = sumstats(
        files,
        str(g.reference),
        trait_names=g.trait_names,
        se_logit=g.se_logit,
        OLS=g.OLS,
        linprob=g.linprob,
        out=ss_path,
        return_summary=True,
    )
    snps = pl.read_parquet(ss_path).head(40)
    return {
        "g": g,
        "dir": d,
        "munged": munged,
        "dropped": dropped,
        "cs": cs,
        "ss": ss,
        "ss_path": ss_path,
        "summary": summary,
        "snps": snps,
    }


@pytest.fixture(scope="module")
def lfmm_run(tmp_path_factory):
    from polgen.demo import make_lfmm_demo
    from polgen.lfmm import fit

    d = tmp_path_factory.mktemp("lfmm_schema")
    data = make_lfmm_demo(d / "in", small=True)
    env = pl.read_csv(data.env, separator="\t").select("IID", "env")
    model = fit(env, str(data.bed), K=2)
    return {"data": data, "dir": d, "env": env, "model": model}


@pytest.fixture(scope="module")
def stlr_run(tmp_path_factory):
    from polgen.demo import make_stlr_demo
    from polgen.stlr import fit

    d = tmp_path_factory.mktemp("stlr_schema")
    data = make_stlr_demo(d / "in", small=True)
    common = dict(
        lr=str(data.lr),
        radius=data.radius,
        contact_distance=data.contact_distance,
        layer=data.layer,
        cluster_key=data.cluster_key,
    )
    targets = list(data.targets[:3])
    res = fit(str(data.h5ad), targets, out=d / "betadata", grn=str(data.grn_links), overwrite=True, **common)
    return {"data": data, "dir": d, "common": common, "fit": res, "betadir": d / "betadata"}


# -- Genomic SEM ------------------------------------------------------------------------------------
def test_gsem_munge(gsem_run):
    for trait, lf in gsem_run["munged"].items():
        check(_eager(lf), "gsem_munge")
        check(gsem_run["dir"] / "munged" / f"{trait}.sumstats.parquet", "gsem_munge")
    check(gsem_run["dropped"], "gsem_drop_summary")


def test_gsem_sumstats(gsem_run):
    check(_eager(gsem_run["ss"]), "gsem_sumstats")
    check(gsem_run["ss_path"], "gsem_sumstats")
    check(gsem_run["summary"], "gsem_drop_summary")
    cols = pl.read_parquet_schema(gsem_run["ss_path"])
    assert [c for c in cols if c.startswith("beta.")] == [f"beta.{t}" for t in gsem_run["g"].trait_names]


def test_gsem_ldsc(gsem_run, tmp_path):
    from polgen.gsem import ldsc_table

    path = gsem_run["cs"].save(tmp_path / "covstruc.parquet")
    check(path, "gsem_covstruc")
    check(ldsc_table(gsem_run["cs"]), "gsem_ldsc_table")


def test_gsem_sem_tables(gsem_run, tmp_path):
    from polgen.gsem import commonfactor, usermodel

    cf = commonfactor(gsem_run["cs"])
    check(cf.parameters, "gsem_sem_parameters")
    check(cf.fit, "gsem_sem_fit")
    assert "std_all" not in cf.parameters.columns
    t = gsem_run["g"].trait_names
    um = usermodel(gsem_run["cs"], f"F1 =~ NA*{t[0]} + {t[1]} + {t[2]}\nF1 ~~ 1*F1")
    check(um.parameters, "gsem_sem_parameters")
    assert "std_all" in um.parameters.columns
    check(um.fit, "gsem_sem_fit")
    check(um.save(str(tmp_path / "um.parquet")), "gsem_sem_parameters")
    check(cf.genomicsem(), "gsem_sem_parameters_r")
    check(um.genomicsem(), "gsem_sem_parameters_r")
    check(um.save(str(tmp_path / "um_r.parquet"), genomicsem_names=True), "gsem_sem_parameters_r")


def test_gsem_user_gwas(gsem_run, tmp_path):
    from polgen.gsem import user_gwas

    t = gsem_run["g"].trait_names
    model = f"F1 =~ NA*{t[0]} + {t[1]} + {t[2]}\nF1 ~~ 1*F1\nF1 ~ SNP"
    df = _eager(user_gwas(gsem_run["snps"], gsem_run["cs"], model))
    check(df, "gsem_user_gwas")
    assert not any(c.startswith("Q_SNP") for c in df.columns)
    with_opts = _eager(user_gwas(gsem_run["snps"], gsem_run["cs"], model, Q_SNP=True, smooth_check=True))
    check(with_opts, "gsem_user_gwas")
    assert {"Q_SNP", "Q_SNP_df", "Q_SNP_p", "Z_smooth"} <= set(with_opts.columns)
    every = _eager(user_gwas(gsem_run["snps"], gsem_run["cs"], model, long=True))
    check(every, "gsem_user_gwas")
    assert every.height > df.height
    # TWAS input: Gene, Panel, HSQ identify the row instead of SNP, CHR, BP, MAF, A1, A2
    twas_in = gsem_run["snps"].select(
        pl.col("SNP").alias("Gene"),
        pl.lit("panel1").alias("Panel"),
        pl.lit(0.1).alias("HSQ"),
        pl.col("^(beta|se)\\..*$"),
    )
    twas = _eager(user_gwas(twas_in, gsem_run["cs"], model.replace("~ SNP", "~ Gene"), TWAS=True))
    check(twas, "gsem_user_gwas")
    assert {"Gene", "Panel", "HSQ"} <= set(twas.columns) and "SNP" not in twas.columns
    written = user_gwas(gsem_run["snps"], gsem_run["cs"], model, out=tmp_path / "gwas", batch_size=16)
    check(written, "gsem_user_gwas")
    check(tmp_path / "gwas", "gsem_user_gwas")


def test_gsem_commonfactor_gwas(gsem_run, tmp_path):
    from polgen.gsem import commonfactor_gwas

    df = _eager(commonfactor_gwas(gsem_run["snps"], gsem_run["cs"]))
    check(df, "gsem_commonfactor_gwas")
    check(_eager(commonfactor_gwas(gsem_run["snps"], gsem_run["cs"], smooth_check=True)), "gsem_commonfactor_gwas")
    commonfactor_gwas(gsem_run["snps"], gsem_run["cs"], out=tmp_path / "cf")
    check(tmp_path / "cf", "gsem_commonfactor_gwas")


def test_gsem_add_snps(gsem_run, tmp_path):
    from polgen.gsem import add_genes, add_snps

    mem = add_snps(gsem_run["cs"], gsem_run["snps"])
    check(mem.to_frame(), "gsem_add_snps")
    add_snps(gsem_run["cs"], gsem_run["snps"], out=tmp_path / "add", batch_size=16)
    check(tmp_path / "add", "gsem_add_snps")
    genes = _eager(gsem_run["snps"]).select(
        pl.col("SNP").alias("Gene"),
        pl.lit("panel1").alias("Panel"),
        pl.lit(0.1).alias("HSQ"),
        pl.col("^(beta|se)\\..*$"),
    )
    check(add_genes(gsem_run["cs"], genes).to_frame(), "gsem_add_snps")


def test_gsem_enrich(tmp_path, monkeypatch):
    from polgen.cli import main
    from polgen.gsem import enrich, s_ldsc

    d = ROOT / "tests" / "data" / "gsem" / "r" / "sldsc_enrich"
    sc = s_ldsc(
        [d / f"T{i}.sumstats.gz" for i in (1, 2, 3)],
        ld=d / "annot" / "baseline.",
        wld=d / "weights" / "weights.",
        frq=d / "frq" / "1000G.",
        trait_names=["T1", "T2", "T3"],
        n_blocks=20,
        exclude_cont=False,
    )
    res = enrich(sc, "F1 =~ T1 + T2 + T3", "F1~~F1", rm_flank=False)
    check(res.enrichment, "gsem_enrich")
    sc.save(tmp_path / "s.json")
    out = tmp_path / "e.parquet"
    assert main(["gsem", "enrich", "--s-covstruc", str(tmp_path / "s.json"), "--model", "F1 =~ T1 + T2 + T3",
                 "--params", "F1~~F1", "--out", str(out), "-q"]) == 0  # fmt: skip
    check(out, "gsem_enrich")


def test_gsem_gls_tools(tmp_path):
    import json

    from polgen.cli import main
    from polgen.gsem import q_trait, read_fusion, summary_gls, summary_gls_bands

    d = ROOT / "tests" / "data" / "gsem" / "r" / "gls_tools"
    inp = json.loads((d / "inputs.json").read_text())
    g = inp["gls"]
    check(summary_gls(g["x"], g["y"], g["V"]), "gsem_summary_gls")
    b = summary_gls_bands(g["x"], g["y"], g["V"], intervals=5, quad=True)
    check(b.coefficients, "gsem_summary_gls")
    check(b.band, "gsem_gls_band")
    x = ",".join(map(repr, g["x"]))
    (tmp_path / "y.txt").write_text("\n".join(map(repr, g["y"])))
    (tmp_path / "v.txt").write_text("\n".join(" ".join(map(repr, r)) for r in g["V"]))
    gls, band = tmp_path / "gls.parquet", tmp_path / "band.parquet"
    assert main(["gsem", "summary-gls", "--y", str(tmp_path / "y.txt"), "--v-y", str(tmp_path / "v.txt"), f"--x={x}",
                 "--bands", "--band-out", str(band), "--out", str(gls), "-q"]) == 0  # fmt: skip
    check(gls, "gsem_summary_gls")
    check(band, "gsem_gls_band")
    f = inp["fusion"]
    files = [str(d / n) for n in f["files"]]
    check(read_fusion(files, f["trait_names"], f["binary"], f["N"]), "gsem_read_fusion")
    twas = tmp_path / "twas.parquet"
    assert main(["gsem", "read-fusion", *files, "--trait-names", *f["trait_names"], "--binary", "T", "F", "T",
                 "--N", *map(str, f["N"]), "--out", str(twas), "-q"]) == 0  # fmt: skip
    check(twas, "gsem_read_fusion")
    q = inp["qtrait"]
    cs = {k: q[k] for k in ("S", "V", "I", "S_Stand", "V_Stand", "trait_names")}
    check(q_trait(cs, q["indicators"], ["X1", "X2"]).table, "gsem_q_trait")
    (tmp_path / "cs.json").write_text(json.dumps(cs))
    qf = tmp_path / "q.parquet"
    assert main(["gsem", "q-trait", "--covstruc", str(tmp_path / "cs.json"), "--indicators", *q["indicators"],
                 "--traits", "X2", "--out", str(qf), "-q"]) == 0  # fmt: skip
    check(qf, "gsem_q_trait")


# -- LFMM2 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("calibrate", ["gif", None])
def test_lfmm_test(lfmm_run, calibrate, tmp_path):
    from polgen.lfmm import test

    res = test(lfmm_run["model"], str(lfmm_run["data"].bed), calibrate=calibrate, out=tmp_path / "t")
    frame = _eager(res.frame)
    check(frame, "lfmm_test")
    check(tmp_path / "t", "lfmm_test")
    if calibrate is None:
        assert frame["P_CALIBRATED"].null_count() == frame.height
    else:
        assert frame["P_CALIBRATED"].null_count() < frame.height


def test_lfmm_test_full_and_two_covariates(lfmm_run):
    from polgen.lfmm import fit, test

    env = lfmm_run["env"].with_columns((pl.col("env") ** 2).alias("env2"))
    model = fit(env, str(lfmm_run["data"].bed), K=2)
    frame = _eager(test(model, str(lfmm_run["data"].bed), full=True).frame)
    check(frame, "lfmm_test")
    assert {"BETA_env", "T_env2", "P_CALIBRATED_env", "LOG10P_env2", "F", "P_F", "ADJ_R2"} <= set(frame.columns)


def test_lfmm_choose_k(lfmm_run):
    from polgen.lfmm import choose_k

    check(choose_k(str(lfmm_run["data"].bed), k_max=3).frame(), "lfmm_choose_k")


def test_lfmm_glm_test(lfmm_run, tmp_path):
    from polgen.lfmm import glm_test

    res = glm_test(lfmm_run["model"], str(lfmm_run["data"].bed), family="poisson", out=tmp_path / "g.parquet")
    check(res.frame, "lfmm_glm_test")
    check(tmp_path / "g.parquet", "lfmm_glm_test")


def test_lfmm_lasso_and_cv(lfmm_run):
    from polgen.lfmm import lfmm_lasso, lfmm_ridge_cv

    bed = str(lfmm_run["data"].bed)
    check(lfmm_lasso(lfmm_run["env"], bed, 2, lambda_num=5).frame(), "lfmm_lasso")
    check(lfmm_ridge_cv(lfmm_run["env"], bed, [1, 2], 1e-5, row_folds=2, col_folds=2), "lfmm_cv")


def test_lfmm_qvalues(lfmm_run, tmp_path):
    from polgen.lfmm import fdr, test

    res = test(lfmm_run["model"], str(lfmm_run["data"].bed), out=tmp_path / "t")
    q = fdr(res, method="storey", out=tmp_path / "q.parquet")
    check(q.frame, "lfmm_qvalues")
    check(tmp_path / "q.parquet", "lfmm_qvalues")


def test_lfmm_offset(lfmm_run, tmp_path):
    from polgen.lfmm import genetic_offset, write_offset

    env = lfmm_run["env"].with_columns((pl.col("env") ** 2).alias("env2"))
    pred = env.with_columns(pl.col("env") + 0.5, pl.col("env2") * 1.1)
    res = genetic_offset(str(lfmm_run["data"].bed), env, pred, K=[1, 2], scale=True)
    check(res.frame, "lfmm_offset")
    check(res.eigen_frame(), "lfmm_offset_eigen")
    write_offset(res, tmp_path / "o.parquet")
    check(tmp_path / "o.parquet", "lfmm_offset")


# -- SpaceTravLR ------------------------------------------------------------------------------------
def test_stlr_betadata(stlr_run):
    files = sorted(stlr_run["betadir"].glob("*_betadata.parquet"))
    assert files
    for f in files:
        check(f, "stlr_betadata")
        check(pl.read_parquet(f), "stlr_betadata")
    check(stlr_run["betadir"], "stlr_betadata")  # the run folder: every part
    check(stlr_run["fit"].scores, "stlr_fit_scores")
    check(stlr_run["fit"].losses, "stlr_fit_losses")  # seed mode: no rows, the declared dtypes


def test_stlr_splash_perturb(stlr_run, tmp_path):
    from polgen.stlr import perturb, perturb_batch, read_betadata, splash

    d, common = stlr_run["data"], stlr_run["common"]
    gene = stlr_run["fit"].genes[0]
    bd = read_betadata(stlr_run["betadir"] / f"{gene}_betadata.parquet")
    check(splash(bd, str(d.h5ad), **common), "stlr_splash")
    tf = d.tfs[0]
    check(perturb(str(d.h5ad), str(stlr_run["betadir"]), tf, 0.0, n_propagation=1, **common), "stlr_perturb")
    sink = perturb_batch(
        str(d.h5ad), str(stlr_run["betadir"]), [tf, d.tfs[1]], tmp_path / "pb", n_propagation=1, **common
    )
    check(_eager(sink.scan()), "stlr_perturb_batch")
    check(tmp_path / "pb", "stlr_perturb_batch")


def test_stlr_transitions(stlr_run):
    from polgen.stlr import perturb
    from polgen.stlr.transitions import transitions

    d, common = stlr_run["data"], stlr_run["common"]
    pert = perturb(str(d.h5ad), str(stlr_run["betadir"]), d.tfs[0], 0.0, n_propagation=1, **common)
    tr = transitions(str(d.h5ad), pert, n_neighbors=20, layer=common["layer"], cluster_key=common["cluster_key"])
    check(tr, "stlr_transitions")


# -- validate itself --------------------------------------------------------------------------------
def test_validate_names_the_column():
    ok = pl.DataFrame({"SNP": ["rs1"], "N": [1.0], "Z": [0.5], "A1": ["A"], "A2": ["G"]})
    validate(ok, "gsem_munge")
    validate(ok.lazy(), "gsem_munge")
    validate(ok.schema, "gsem_munge")
    validate(ok.to_arrow().schema, "gsem_munge")
    with pytest.raises(SchemaError, match="missing column 'Z'") as e:
        validate(ok.drop("Z"), "gsem_munge")
    assert e.value.column == "Z"
    with pytest.raises(SchemaError, match="extra column 'BETA'") as e:
        validate(ok.with_columns(BETA=pl.lit(1.0)), "gsem_munge")
    assert e.value.column == "BETA"
    with pytest.raises(SchemaError, match="'N' has dtype Int64, declared Float64") as e:
        validate(ok.with_columns(pl.col("N").cast(pl.Int64)), "gsem_munge")
    assert e.value.column == "N"
    with pytest.raises(SchemaError, match="'Z' holds nulls"):
        validate(ok.with_columns(Z=pl.lit(None, pl.Float64)), "gsem_munge")
    assert schema.output_schema("gsem_munge").names == ("SNP", "N", "Z", "A1", "A2")
    with pytest.raises(SchemaError, match="unknown output kind"):
        validate(ok, "no_such_kind")
    bd = pl.DataFrame({"Cluster": ["0"], "CellID": ["c"], "beta0": [1.0], "beta_Tf1": [0.5]})
    with pytest.raises(SchemaError, match="exactly one of"):
        validate(bd, "stlr_betadata")
    validate(bd.drop("CellID"), "stlr_betadata")


def test_templates_match_the_most_specific_column():
    s = schema.output_schema("lfmm_test")
    assert s.match("P").name == "P[_{variable}]"
    assert s.match("P_CALIBRATED").name == "P_CALIBRATED[_{variable}]"
    assert s.match("P_CALIBRATED_temp").name == "P_CALIBRATED[_{variable}]"
    assert s.match("P_F").name == "P_F"
    assert s.match("T_temp").name == "T[_{variable}]"
    assert s.match("nonsense") is None


def test_identity_constants_agree_with_declarations():
    # the declarations use the canonical names and dtypes of the per-SNP identity columns
    for kind in ("gsem_sumstats", "lfmm_test"):
        s = OUTPUTS[kind]
        for name in (schema.SNP, schema.CHR, schema.BP, schema.A1, schema.A2):
            assert s.column(name).dtype == schema.DTYPES[name]


def test_gsem_pa_ldsc_and_sim_ldsc(tmp_path):
    import numpy as np

    from polgen.cli import main
    from polgen.gsem import pa_ldsc, sim_ldsc

    d = ROOT / "tests" / "data" / "gsem" / "r" / "paldsc_simldsc"
    S = np.array([[1.0, 0.5, 0.4], [0.5, 1.0, 0.3], [0.4, 0.3, 1.0]])
    check(pa_ldsc(S, np.eye(6) * 0.002, r=20, seed=1).to_frame(), "gsem_pa_ldsc")
    check(pa_ldsc(S, np.eye(6) * 0.002, r=10, seed=1, diag=True, fa=True).to_frame(), "gsem_pa_ldsc")
    np.savetxt(tmp_path / "S.csv", S, delimiter=",")
    np.savetxt(tmp_path / "V.csv", np.eye(6) * 0.002, delimiter=",")
    pa = tmp_path / "pa.parquet"
    assert main(["gsem", "pa-ldsc", "--S", str(tmp_path / "S.csv"), "--V", str(tmp_path / "V.csv"), "--r", "10",
                 "--out", str(pa), "-q"]) == 0  # fmt: skip
    check(pa, "gsem_pa_ldsc")
    sims = sim_ldsc(S * 0.1, 50000, d / "ld", n_overlap=0.5, seed=1, out=tmp_path / "sim")
    check(sims[0]["GWAS1"].collect(), "gsem_sim_sumstats")
    check(tmp_path / "sim", "gsem_sim_sumstats")
    check(sim_ldsc(S * 0.1, [5e4, 6e4, 7e4], d / "ld", seed=2)[0]["GWAS3"].collect(), "gsem_sim_sumstats")


def test_every_kind_is_exercised():
    # runs last in this module (pytest keeps file order)
    assert set(OUTPUTS) == COVERED, sorted(set(OUTPUTS) - COVERED)


# -- README output reference ------------------------------------------------------------------------
def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- output-reference:start -->\n(.*?)<!-- output-reference:end -->", text, re.S)
    assert m, "README.md lacks the generated output reference block"
    return m.group(1)


def test_readme_output_reference_matches_declarations():
    assert _readme_section() == output_reference_markdown(), (
        "README.md's output reference differs from polgen.schema.OUTPUTS; regenerate it with "
        "python -c 'from polgen.schema import output_reference_markdown as m; print(m())'"
    )


def test_readme_lists_every_column_of_every_kind():
    section = _readme_section()
    for kind, s in OUTPUTS.items():
        assert f"### `{kind}`" in section
        for c in s.columns:
            assert f"| `{c.name}` |" in section, (kind, c.name)
