"""The gsem namespace delegates to the typed functions and gives the same numbers."""

import json

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

import polgen  # noqa: F401  (registers the namespaces)
from conftest import gsem_fixture
from polgen import gsem


def _fixture():
    return json.loads(gsem_fixture("gwas_per_snp.json").read_text())


def _snps(d) -> pl.DataFrame:
    rows = []
    for i, s in enumerate(d["snps"]):
        row = {"SNP": s["SNP"], "CHR": "1", "BP": i + 1, "MAF": s["MAF"], "A1": s["A1"], "A2": s["A2"]}
        for t, b, se in zip(d["trait_names"], s["beta"], s["se"]):
            row[f"beta.{t}"] = b
            row[f"se.{t}"] = se
        rows.append(row)
    return pl.DataFrame(rows)


def test_exports_are_functions():
    for name in gsem.__all__:
        assert getattr(gsem, name) is not None, name
    assert callable(gsem.ldsc) and callable(gsem.munge) and callable(gsem.sumstats)


def test_namespace_user_gwas_matches_function(tmp_path):
    d = _fixture()
    cs = {"S": d["s"], "V": d["v"], "I": d["i_mat"], "trait_names": d["trait_names"]}
    snps = _snps(d)
    t = d["trait_names"]
    model = f"F1 =~ NA*{t[0]} + {t[1]} + {t[2]}\nF1 ~~ 1*F1\nF1 ~ SNP"
    direct = gsem.user_gwas(snps, cs, model)
    eager = snps.gsem.user_gwas(cs, model)
    lazy = snps.lazy().gsem.user_gwas(cs, model)
    lazy = lazy.collect() if isinstance(lazy, pl.LazyFrame) else lazy
    assert_frame_equal(direct, eager)
    assert_frame_equal(direct, lazy)
    assert np.isfinite(direct["est"].to_numpy()).all()
    cf = snps.lazy().gsem.commonfactor_gwas(cs)
    cf = cf.collect() if isinstance(cf, pl.LazyFrame) else cf
    assert_frame_equal(cf, gsem.commonfactor_gwas(snps, cs))


def test_namespace_write_model_matches_function():
    loadings = pl.DataFrame({"F1": [0.7, 0.6, 0.05, 0.1], "F2": [0.05, 0.1, 0.8, 0.5]})
    names = ["A", "B", "C", "D"]
    assert loadings.gsem.write_model(names, 0.3) == gsem.write_model(loadings, names, 0.3)
    text = loadings.lazy().gsem.write_model(names, 0.3)
    assert "=~" in text and "A" in text and "C" in text
