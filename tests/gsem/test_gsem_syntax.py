"""lavaan syntax parser: structure, defaults (checked against R lavaan::lavaanify), errors."""

from __future__ import annotations

import json
import math
import pickle

import pytest

from conftest import r_reference
from polgen.errors import ModelError, ModelSyntaxError
from polgen.gsem.syntax import Expr, parse_model, parse_syntax

MODELS = {
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


def _r_partables(models: dict[str, str]) -> dict:
    """lavaanify()'s tables (=~, ~, ~~ rows) for ``models``: stored R output (lavaan 0.6.14,
    tests/data/gsem/r/misc/lavaanify.json, with auto.var, auto.fix.first, auto.fix.single,
    auto.cov.lv.x, auto.cov.y, fixed.x TRUE and no mean structure; ustart NA stored as -999)."""
    ref = json.loads(r_reference("misc", "lavaanify.json").read_text())
    assert ref["models"] == models
    return ref["partables"]


def test_partable_matches_lavaanify():
    ref = _r_partables(MODELS)
    for name, text in MODELS.items():
        t = parse_model(text)
        r = ref[name]
        # lavaan's 0.6.14 start() handling: start() keeps the row free
        got = [(x.lhs, x.op, x.rhs, x.free, x.exo, x.user) for x in t.rows]
        want = list(zip(r["lhs"], r["op"], r["rhs"], r["free"], r["exo"], r["user"]))
        assert got == want, name
        for x, us in zip(t.rows, r["ustart"]):
            if x.free == 0 and x.exo == 0 and us != -999:
                assert x.ustart == pytest.approx(us), (name, x)


def test_basic_structure_and_order():
    t = parse_model(MODELS["gwas_like"], observed=["V1", "V2", "V3", "V4", "V5", "V6", "SNP"])
    assert t.observed == ["V1", "V2", "V3", "V4", "V5", "V6", "SNP"]
    assert t.latent == ["F1", "F2"]
    assert t.exogenous == ["SNP"]
    # SNP variance is fixed.x: not free, exo, its moment not counted
    snp = t.rows[t.index("SNP", "~~", "SNP")]
    assert snp.free == 0 and snp.exo == 1 and math.isnan(snp.ustart)
    assert t.n_data == 7 * 8 // 2 - 1
    assert t.n_free == 15
    assert [r.free for r in t.free_rows] == list(range(1, 16))
    frame = t.to_frame()
    assert frame.columns[:4] == ["id", "lhs", "op", "rhs"]
    assert frame.height == len(t.rows)


def test_modifiers_labels_constraints_defined():
    text = """
    F1 =~ NA*V1 + a*V2 + start(0.3)*b*V3 + label("c")*V4   ! bang comment
    F1 ~~ 1*F1
    V1 ~~ e1*V1; e1 > .0001
    ab := a*b + sqrt(abs(c))^2 - 1/2
    a == b
    0 < c
    """
    t = parse_model(text)
    r = {(x.lhs, x.op, x.rhs): x for x in t.rows}
    assert r[("F1", "=~", "V1")].free > 0 and math.isnan(r[("F1", "=~", "V1")].ustart)
    assert r[("F1", "=~", "V2")].label == "a"
    assert r[("F1", "=~", "V3")].label == "b" and r[("F1", "=~", "V3")].ustart == 0.3
    assert r[("F1", "=~", "V3")].free > 0
    assert r[("F1", "=~", "V4")].label == "c"
    assert r[("V1", "~~", "V1")].lower == pytest.approx(1e-4)
    assert r[("F1", "=~", "V4")].lower == 0.0
    assert [c.op for c in t.constraints] == ["=="]
    assert t.defined[0].name == "ab"
    val = t.defined[0].expr.evaluate({"a": 2.0, "b": 3.0, "c": -4.0})
    assert val == pytest.approx(2 * 3 + 4 - 0.5)
    # complex step derivative works through abs/sqrt
    h = 1e-20
    d = t.defined[0].expr.evaluate({"a": 2.0 + 1j * h, "b": 3.0, "c": -4.0}).imag / h
    assert d == pytest.approx(3.0)


def test_duplicate_elements_merge_and_symmetric_cov():
    t = parse_model("F1 =~ V1 + V2 + V3\nF1 =~ NA*V1\nV2 ~~ V1\nV1 ~~ 0.1*V2")
    assert sum(1 for x in t.rows if x.op == "=~" and x.rhs == "V1") == 1
    v1 = t.rows[t.index("F1", "=~", "V1")]
    assert v1.free > 0
    cov = t.rows[t.index("V1", "~~", "V2")]
    assert cov.free == 0 and cov.ustart == 0.1


def test_std_lv():
    t = parse_model("F1 =~ V1 + V2 + V3", std_lv=True)
    assert all(x.free > 0 for x in t.rows if x.op == "=~")
    f = t.rows[t.index("F1", "~~", "F1")]
    assert f.free == 0 and f.ustart == 1.0


def test_shared_label_with_fixed_fixes_all():
    t = parse_model("F1 =~ a*V1 + a*V2 + V3")  # first loading fixed to 1 => V2 fixed too
    assert t.rows[1].free == 0 and t.rows[1].ustart == 1.0


def test_expr_is_safe_and_picklable():
    e = Expr.parse("a*b + 2^c")
    assert e.names == ("a", "b", "c")
    assert pickle.loads(pickle.dumps(e)).evaluate({"a": 1, "b": 2, "c": 3}) == pytest.approx(10.0)
    for bad in ["__import__('os')", "a.b", "a if b else c", "[a]", "open(a)", "sqrt(a, b)"]:
        with pytest.raises(ModelSyntaxError):
            Expr.parse(bad)
    t = parse_model("F1 =~ V1 + a*V2 + V3\nd := a*2")
    assert pickle.loads(pickle.dumps(t)).defined[0].expr.evaluate({"a": 1.5}) == pytest.approx(3.0)


@pytest.mark.parametrize(
    "text, line, col",
    [
        ("F1 =~ V1 + V2\nF1 =~ V3 + + V4", 2, 12),
        ("F1 =~ V1 + V2\nF2 = V3", 2, 4),
        ("F1 =~ V1\nF1 ~ 1", 2, 6),
        ("F1 =~ V1 + V2\n  F1 =~ foo(2)*V3", 2, 9),
        ("F1 =~ V1 + V2\nx := a +* b", 2, 9),
        ("F1 =~ V1 + 2x", 1, 12),
        ("F1 =~ V1 ~~ V2", 1, 10),
    ],
)
def test_syntax_errors_have_position(text, line, col):
    with pytest.raises(ModelSyntaxError) as ei:
        parse_model(text)
    assert ei.value.line == line
    assert ei.value.col == col
    assert f"line {line}" in str(ei.value)


def test_unknown_variables_and_labels():
    with pytest.raises(ModelError, match="V9"):
        parse_model("F1 =~ V1 + V2 + V9", observed=["V1", "V2", "V3"])
    with pytest.raises(ModelError, match="zz"):
        parse_model("F1 =~ V1 + a*V2 + V3\nd := a*zz")
    with pytest.raises(ModelError, match="observed"):
        parse_model("V1 =~ V2 + V3", observed=["V1", "V2", "V3"])
    with pytest.raises(ModelSyntaxError):
        parse_model("# only a comment\n")


def test_parse_syntax_flat_rows():
    rows, defined, cons = parse_syntax("F1 + F2 ~ x1 + 0.5*x2; a == b; d := a")
    assert [(r.lhs, r.op, r.rhs) for r in rows] == [
        ("F1", "~", "x1"),
        ("F1", "~", "x2"),
        ("F2", "~", "x1"),
        ("F2", "~", "x2"),
    ]
    assert rows[1].fixed == 0.5 and rows[3].fixed == 0.5
    assert cons[0].op == "==" and defined[0].name == "d"


def test_layout_does_not_change_the_table():
    """Whitespace, comments, ';' versus newlines and '+' continuation lines give the same table."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    stmts = [
        ["F1", "=~", ["NA*V1", "a*V2", "V3"]],
        ["F2", "=~", ["NA*V4", "b*V5", "V6"]],
        ["F2", "~", ["F1"]],
        ["F1", "~~", ["1*F1"]],
        ["V1", "~~", ["V4"]],
        ["ab", ":=", ["a*b"]],
    ]

    def render(ws, seps, comments, breaks):
        out = []
        for i, (lhs, op, terms) in enumerate(stmts):
            w = ws[i % len(ws)]
            if op == ":=":
                body = f"{lhs}{w}{op}{w}{terms[0]}"
            else:
                joined = ""
                for j, t in enumerate(terms):
                    if j:
                        joined += f"{w}+\n{w}" if breaks[(i + j) % len(breaks)] else f"{w}+{w}"
                    joined += t
                body = f"{lhs}{w}{op}{w}{joined}"
            if comments[i % len(comments)]:
                body += f"{w}# note {i} =~ ~ ;"
            out.append(body)
            out.append(seps[i % len(seps)])
        return "".join(out)

    ref = [
        (r.lhs, r.op, r.rhs, r.free, r.ustart, r.label)
        for r in parse_model(render([" "], ["\n"], [False], [False])).rows
    ]

    @settings(max_examples=40, deadline=None)
    @given(
        st.lists(st.sampled_from(["", " ", "  ", "\t"]), min_size=1, max_size=4),
        st.lists(st.sampled_from(["\n", ";", "\n\n", " ;\n", "\r\n"]), min_size=1, max_size=4),
        st.lists(st.booleans(), min_size=1, max_size=4),
        st.lists(st.booleans(), min_size=1, max_size=4),
    )
    def check(ws, seps, comments, breaks):
        text = render(ws, seps, comments, breaks)
        if any(c for c in comments) and any(s_ == ";" for s_ in seps):
            # a comment swallows the rest of its line, including a following ';' statement
            text = text.replace(";", "\n")
        got = [(r.lhs, r.op, r.rhs, r.free, r.ustart, r.label) for r in parse_model(text).rows]
        assert [g[:4] for g in got] == [x[:4] for x in ref]
        assert [g[5] for g in got] == [x[5] for x in ref]

    check()
