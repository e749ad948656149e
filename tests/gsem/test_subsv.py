"""sub_sv / index_s against R GenomicSEM subSV / indexS (../shared fixture subsv.json and stored R
outputs in tests/data/gsem/r/gls_tools/)."""

import json

import numpy as np
import pytest

from conftest import gsem_fixture, r_reference
from polgen.errors import InputError, SchemaError
from polgen.gsem import CovStruc, index_s, sub_sv


@pytest.fixture(scope="module")
def r_sv():
    inputs = json.loads(r_reference("gls_tools", "inputs.json").read_text())["subsv"]
    return inputs, json.loads(r_reference("gls_tools", "r_out.json").read_text())["subsv"]


def test_shared_fixture():
    d = json.loads(gsem_fixture("newer", "subsv.json").read_text())
    r = sub_sv({"S": d["s"], "V": d["v"]}, d["index_s"])
    np.testing.assert_array_equal(r.sub_s, d["sub_s"])
    np.testing.assert_array_equal(r.sub_v, d["sub_v"])
    rr = sub_sv({"R": d["r_corr"], "V_R": d["v_r"]}, d["index_r"], type="R")
    np.testing.assert_array_equal(rr.sub_s, d["sub_s_r"])
    np.testing.assert_array_equal(rr.sub_v, d["sub_v_r"])
    assert rr.labels == ["V1~~V2", "V2~~V3", "V3~~V4"]


@pytest.mark.parametrize("kind", ["S", "S_Stand", "R"])
def test_matches_r(r_sv, kind):
    s, out = r_sv
    if kind == "R":
        obj = {"R": s["R"], "V_R": s["V_R"]}
        idx = s["index_r"]
    else:
        obj = CovStruc(S=s["S"], V=s["V"], I=None, trait_names=[], S_Stand=s["S_Stand"], V_Stand=s["V_Stand"])  # type: ignore[arg-type]
        idx = s["index_s"]
    r = sub_sv(obj, idx, type=kind)
    np.testing.assert_allclose(r.sub_s, out[kind]["sub_s"], rtol=1e-12)
    np.testing.assert_allclose(r.sub_v, out[kind]["sub_v"], rtol=1e-12)
    np.testing.assert_array_equal(r.index, idx)


def test_index_s_matches_r(r_sv):
    s, out = r_sv
    np.testing.assert_array_equal(index_s({"S": s["S"], "V": s["V"]}), out["index_s"])
    np.testing.assert_array_equal(index_s(matrix=s["S"], r=True), out["index_r"])
    # the numbers are the positions in vech(S)
    S = np.array(s["S"])
    num = index_s(matrix=S)
    vech = np.concatenate([S[j:, j] for j in range(S.shape[0])])
    for i in range(5):
        for j in range(5):
            assert vech[num[i, j] - 1] == S[i, j]


def test_rgmodel_like_object_and_order():
    class RG:
        R = np.array([[1.0, 0.3, 0.2], [0.3, 1.0, 0.4], [0.2, 0.4, 1.0]])
        V_R = np.diag([0.01, 0.02, 0.03])
        trait_names = ["A", "B", "C"]

    r = sub_sv(RG(), [3, 1], type="R")
    np.testing.assert_array_equal(r.sub_s, [0.4, 0.3])  # the given order for both
    np.testing.assert_array_equal(np.diag(r.sub_v), [0.03, 0.01])
    assert r.labels == ["B~~C", "A~~B"]


def test_bad_input_is_typed():
    S = np.eye(3) * 0.5
    V = np.eye(6) * 1e-3
    with pytest.raises(InputError, match="index 7 is out of range: S has 6 elements") as e:
        sub_sv({"S": S, "V": V}, [1, 7])
    assert e.value.column == "index"
    with pytest.raises(InputError, match="index 0 is out of range"):
        sub_sv({"S": S, "V": V}, [0, 2])
    with pytest.raises(InputError, match="out of range: R has 3 elements"):
        sub_sv({"R": np.eye(3), "V_R": np.eye(3)}, [4], type="R")
    with pytest.raises(InputError, match="whole numbers"):
        sub_sv({"S": S, "V": V}, [1.5])
    with pytest.raises(InputError, match="repeats"):
        sub_sv({"S": S, "V": V}, [2, 2])
    with pytest.raises(SchemaError, match="V_R"):
        sub_sv({"S": S, "V": V}, [1], type="R")
    with pytest.raises(SchemaError, match="ldsc\\(stand=True\\)"):
        sub_sv({"S": S, "V": V}, [1], type="S_Stand")
    with pytest.raises(InputError, match="type must be one of"):
        sub_sv({"S": S, "V": V}, [1], type="Q")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="square"):
        index_s(matrix=np.ones((2, 3)))


def test_cli_sub_sv_feeds_summary_gls(r_sv, tmp_path, capsys):
    from polgen import cli
    from polgen.gsem import summary_gls

    s, out = r_sv
    cs = tmp_path / "cs.json"
    cs.write_text(json.dumps({"S": s["S"], "V": s["V"], "S_Stand": s["S_Stand"], "V_Stand": s["V_Stand"]}))
    assert cli.main(["gsem", "sub-sv", "--covstruc", str(cs), "--print-index"]) == 0
    assert "numbering of S" in capsys.readouterr().out
    o = tmp_path / "sub.json"
    idx = ",".join(map(str, s["index_s"]))
    assert (
        cli.main(["gsem", "sub-sv", "--covstruc", str(cs), "--index", idx, "--type", "S_Stand", "--out", str(o)]) == 0
    )
    got = json.loads(o.read_text())
    np.testing.assert_allclose(got["sub_s"], out["S_Stand"]["sub_s"], rtol=1e-12)
    rg = tmp_path / "rg.json"
    rg.write_text(json.dumps({"R": s["R"], "V_R": s["V_R"], "trait_names": list("ABCDE")}))
    o2 = tmp_path / "subr.json"
    ir = ",".join(map(str, s["index_r"]))
    assert cli.main(["gsem", "sub-sv", "--covstruc", str(rg), "--type", "R", "--index", ir, "--out", str(o2)]) == 0
    np.testing.assert_allclose(json.loads(o2.read_text())["sub_v"], out["R"]["sub_v"], rtol=1e-12)
    g = tmp_path / "gls.parquet"
    x = "0.1,0.4,0.2,0.8,0.5"
    assert cli.main(["gsem", "summary-gls", "--subsv", str(o2), "--x", x, "--out", str(g)]) == 0
    import polars as pl

    direct = summary_gls([0.1, 0.4, 0.2, 0.8, 0.5], out["R"]["sub_s"], out["R"]["sub_v"])
    np.testing.assert_allclose(pl.read_parquet(g)["beta"].to_numpy(), direct["beta"].to_numpy(), rtol=1e-10)
    assert cli.main(["gsem", "sub-sv", "--covstruc", str(cs), "--index", "99", "--out", str(tmp_path / "b.json")]) == 2
    assert "index 99 is out of range" in capsys.readouterr().err


def test_rgmodel_result_pipeline():
    """rgmodel -> sub_sv(type="R") -> summary_gls, and the same result's covstruc for type="S"."""
    from polgen.gsem import rgmodel, summary_gls

    q = json.loads(r_reference("gls_tools", "inputs.json").read_text())["qtrait"]
    cs = {k: q[k] for k in ("S", "V", "I", "trait_names")}
    rg = rgmodel(cs)
    num = index_s(matrix=rg.R, r=True)
    idx = [int(num[6, j]) for j in range(6)]  # X1 with the six indicators
    sub = sub_sv(rg, idx, type="R")
    assert sub.labels == [f"I{j + 1}~~X1" for j in range(6)]
    np.testing.assert_allclose(sub.sub_s, rg.R[6, :6], rtol=1e-12)
    np.testing.assert_allclose(np.diag(sub.sub_v), np.diag(rg.V_R)[np.array(idx) - 1], rtol=1e-12)
    t = summary_gls(np.arange(6.0), sub)
    assert t.height == 2 and np.isfinite(t["se"].to_numpy()).all()
    s = sub_sv(rg, [1, 2], type="S")
    np.testing.assert_allclose(s.sub_s, np.array(q["S"])[[0, 1], 0], rtol=1e-12)
