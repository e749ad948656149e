"""`polgen gsem usermodel|commonfactor|rgmodel` end to end through the main entry point: the files
written equal the Python API's results (which are checked against R elsewhere: test_gsem_sem*.py),
and bad arguments are typed errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from polgen.cli import main
from polgen.gsem import commonfactor, rgmodel, usermodel
from polgen.gsem.covstruc import CovStruc
from tests.conftest import gsem_fixture


@pytest.fixture(scope="module")
def covstruc_file(tmp_path_factory):
    d = json.loads(gsem_fixture("gwas_per_snp.json").read_text())
    cs = CovStruc.from_mapping({"S": d["s"], "V": d["v"], "I": d["i_mat"], "trait_names": d["trait_names"]})
    path = tmp_path_factory.mktemp("cs") / "ldsc.json"
    cs.save(path)
    return path, d["trait_names"]


def test_usermodel_cli_equals_api(covstruc_file, tmp_path, capsys):
    path, t = covstruc_file
    model = f"F1 =~ NA*{t[0]} + {t[1]} + {t[2]}; F1 ~~ 1*F1"
    out = tmp_path / "fit.parquet"
    assert main(["gsem", "usermodel", "--covstruc", str(path), "--model", model, "--out", str(out)]) == 0
    ours = pl.read_parquet(out)
    api = usermodel(path, model.replace("; ", "\n")).parameters
    np.testing.assert_allclose(ours["est"].to_numpy(), api["est"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours["se"].to_numpy(), api["se"].to_numpy(), rtol=1e-12)
    printed = capsys.readouterr().out
    assert "model fit" in printed and "converged" in printed
    # a model file, ML, R's column names; the output exists now: refused without --overwrite
    lav = tmp_path / "model.lav"
    lav.write_text(model.replace("; ", "\n"))
    argv = ["gsem", "usermodel", "--covstruc", str(path), "--model", str(lav), "--out", str(out), "--estimation", "ML"]
    assert main(argv) == 2
    assert main([*argv, "--overwrite", "--genomicsem-names"]) == 0
    ml = pl.read_parquet(out)
    assert "Unstand_Est" in ml.columns
    api_ml = usermodel(path, model.replace("; ", "\n"), estimation="ML").genomicsem()
    np.testing.assert_allclose(ml["Unstand_Est"].to_numpy(), api_ml["Unstand_Est"].to_numpy(), rtol=1e-12)


def test_commonfactor_and_rgmodel_cli(covstruc_file, tmp_path):
    path, t = covstruc_file
    out = tmp_path / "cf.parquet"
    assert main(["gsem", "commonfactor", "--covstruc", str(path), "--out", str(out)]) == 0
    api = commonfactor(path).parameters
    np.testing.assert_allclose(pl.read_parquet(out)["est"].to_numpy(), api["est"].to_numpy(), rtol=1e-12)
    rg_out = tmp_path / "rg.json"
    assert main(["gsem", "rgmodel", "--covstruc", str(path), "--out", str(rg_out)]) == 0
    got = json.loads(rg_out.read_text())
    api_rg = rgmodel(path)
    assert got["trait_names"] == t
    np.testing.assert_allclose(np.array(got["R"]), api_rg.R, rtol=1e-12)
    np.testing.assert_allclose(np.array(got["V_R"]), api_rg.V_R, rtol=1e-12)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["gsem", "rgmodel", "--covstruc", "{cs}", "--out", "{tmp}/rg.parquet"], "must end in .json"),
        (["gsem", "commonfactor", "--covstruc", "{tmp}/missing.json", "--out", "{tmp}/cf.parquet"], "not found"),
        (
            ["gsem", "usermodel", "--covstruc", "{cs}", "--model", "F1 =~ nope + other", "--out", "{tmp}/u.parquet"],
            "neither latent",
        ),
    ],
)
def test_bad_arguments_are_typed_errors(covstruc_file, tmp_path, capsys, argv, message):
    path, _ = covstruc_file
    argv = [a.format(cs=path, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err
