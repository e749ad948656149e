"""polgen.plot.path_diagram: one arrow per parameter with the right label, valid SVG, inputs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import polars as pl
import pytest

from polgen.errors import InputError, SchemaError
from polgen.plot import path_diagram

NS = {"s": "http://www.w3.org/2000/svg"}


def _params() -> pl.DataFrame:
    rows = [
        ("F1", "=~", "A", True, 0.61, 0.55, 0.7012),
        ("F1", "=~", "B", True, 0.52, 0.48, 0.5049),
        ("F2", "=~", "C", True, 0.40, 0.39, 0.9),
        ("F2", "~", "F1", True, 0.30, 0.31, 0.3361),
        ("F1", "~", "SNP", True, 0.01, 0.02, 0.0199),
        ("A", "~~", "A", True, 0.2, 0.2, 0.5083),
        ("A", "~~", "B", True, 0.05, 0.05, 0.1),
        ("F1", "~~", "F1", False, 1.0, 1.0, 1.0),
        ("C", "~~", "C", False, 0.05, 0.05, 0.05),
        ("h", ":=", "a*b", True, 0.1, 0.1, None),
    ]
    return pl.DataFrame(rows, schema=["lhs", "op", "rhs", "free", "est", "est_std", "std_all"], orient="row")


def _params_of(svg: str) -> list[tuple[str, str, str, str, bool]]:
    root = ET.fromstring(svg)
    out = []
    for g in root.iter("{http://www.w3.org/2000/svg}g"):
        if g.get("class") == "param":
            path = g.find("s:path", NS)
            text = g.find("s:text", NS)
            assert path is not None and "marker-end" in path.attrib
            two_headed = "marker-start" in path.attrib
            assert (g.get("data-op") == "~~") == two_headed
            out.append(
                (
                    g.get("data-lhs"),
                    g.get("data-op"),
                    g.get("data-rhs"),
                    text.text if text is not None else "",
                    "stroke-dasharray" in path.attrib,
                )
            )
    return out


def test_one_arrow_per_parameter_with_standardised_labels(tmp_path):
    df = _params()
    svg = path_diagram(df, tmp_path / "m.svg", engine="svg")
    assert (tmp_path / "m.svg").read_text() == svg
    got = _params_of(svg)
    arrows = df.filter(pl.col("op").is_in(["=~", "~", "~~"]))
    assert len(got) == arrows.height == 9
    want = {(r["lhs"], r["op"], r["rhs"]): (f"{r['std_all']:.2f}", not r["free"]) for r in arrows.iter_rows(named=True)}
    assert {(a, o, b): (t, d) for a, o, b, t, d in got} == want
    # nodes: latents as ellipses above observed boxes
    root = ET.fromstring(svg)
    nodes = {
        g.get("data-name"): g
        for g in root.iter("{http://www.w3.org/2000/svg}g")
        if (g.get("class") or "").startswith("node")
    }
    assert set(nodes) == {"F1", "F2", "A", "B", "C", "SNP"}
    ys = {
        k: float(
            (g.find("s:ellipse", NS) if g.find("s:ellipse", NS) is not None else g.find("s:rect", NS)).get("cy")
            or g.find("s:rect", NS).get("y")
        )
        for k, g in nodes.items()
    }
    assert max(ys["F1"], ys["F2"]) < min(ys["A"], ys["B"], ys["C"], ys["SNP"])
    assert nodes["F1"].find("s:ellipse", NS) is not None and nodes["A"].find("s:rect", NS) is not None


def test_value_choice_and_r_names():
    df = _params()
    got = {(a, o, b): t for a, o, b, t, _ in _params_of(path_diagram(df, value="est", engine="svg", digits=3))}
    assert got[("F1", "=~", "A")] == "0.610"
    r = df.rename({"est": "Unstand_Est", "est_std": "STD_Genotype", "std_all": "STD_All"})
    got_r = {(a, o, b): t for a, o, b, t, _ in _params_of(path_diagram(r, value="est_std", engine="svg"))}
    assert got_r[("F1", "=~", "A")] == "0.55"


def test_inputs_and_errors(tmp_path):
    df = _params()
    df.write_parquet(tmp_path / "p.parquet")
    assert _params_of(path_diagram(tmp_path / "p.parquet", engine="svg")) == _params_of(path_diagram(df, engine="svg"))

    class Fit:  # duck-typed SEMResult
        parameters = df

    assert len(_params_of(path_diagram(Fit(), engine="svg"))) == 9
    with pytest.raises(SchemaError):
        path_diagram(pl.DataFrame({"a": [1]}))
    with pytest.raises(InputError, match="no =~"):
        path_diagram(df.filter(pl.col("op") == ":="))
    with pytest.raises(InputError, match="no such parameter table"):
        path_diagram("F1 =~ A + B")
    with pytest.raises(InputError, match=r"\.svg"):
        path_diagram(df, tmp_path / "m.gif", engine="svg")


def test_a_real_usermodel_fit(tmp_path):
    from polgen.gsem.covstruc import CovStruc
    from polgen.gsem.fit_models import usermodel
    from polgen.gsem.syntax import parse_model

    S = np.array([[0.30, 0.10, 0.08], [0.10, 0.25, 0.07], [0.08, 0.07, 0.20]])
    V = np.diag(np.full(6, 1e-4))
    cs = CovStruc(S=S, V=V, I=np.eye(3), N=np.full(6, 1e4), m=1e6, trait_names=["A", "B", "C"])
    fit = usermodel(cs, "F1 =~ A + B + C")
    svg = path_diagram(fit, tmp_path / "fit.svg", engine="svg", title="F1")
    got = {(a, o, b): t for a, o, b, t, _ in _params_of(svg)}
    par = fit.parameters.filter(pl.col("op").is_in(["=~", "~", "~~"]))
    assert len(got) == par.height
    for r in par.iter_rows(named=True):
        assert got[(r["lhs"], r["op"], r["rhs"])] == f"{r['std_all']:.2f}"
    # a model without a fit: the parsed table (fixed values on the fixed arrows)
    tab = parse_model("F1 =~ A + B + C\nF1 ~ SNP", observed=["A", "B", "C", "SNP"])
    assert ("F1", "~", "SNP") in {(a, o, b) for a, o, b, _, _ in _params_of(path_diagram(tab, engine="svg"))}


def test_pictures_without_matplotlib_raise_a_typed_error_naming_the_extra(monkeypatch):
    import sys

    from polgen.plot import MissingExtraError, manhattan

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    df = pl.DataFrame({"CHR": ["1", "2"], "BP": [1, 2], "P": [0.5, 0.1]})
    with pytest.raises(MissingExtraError, match=r"polgen\[plot\]") as err:
        manhattan(df)
    assert err.value.context["extra"] == "plot" and isinstance(err.value, ImportError)
    assert 'class="param"' in path_diagram(_params(), engine="svg")  # SVG needs no matplotlib


def test_cli_without_matplotlib_prints_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    import sys

    import polgen.cli as C

    if "polgen.plot.cli" not in C.METHOD_CLIS:
        monkeypatch.setattr(C, "METHOD_CLIS", (*C.METHOD_CLIS, "polgen.plot.cli"))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    pl.DataFrame({"CHR": ["1"], "BP": [1], "P": [0.5]}).write_parquet(tmp_path / "g.parquet")
    assert C.main(["plot", "qq", str(tmp_path / "g.parquet"), "-o", str(tmp_path / "q.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'polgen[plot]'" in err[0]
    # the path diagram needs no matplotlib
    _params().write_parquet(tmp_path / "p.parquet")
    assert C.main(["plot", "path", str(tmp_path / "p.parquet"), "-o", str(tmp_path / "p.svg"), "--engine", "svg"]) == 0
