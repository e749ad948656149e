"""polgen report: one self-contained HTML page per results folder; the plot / report CLI."""

from __future__ import annotations

import argparse
import base64
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("matplotlib")

from polgen.io.sink import BatchSink, sha256_file  # noqa: E402
from polgen.plot import report, report_html  # noqa: E402
from polgen.plot.cli import register  # noqa: E402

VOID = {"meta", "img", "br", "hr", "input", "link", "col", "source", "area", "base", "wbr"}


class _Checker(HTMLParser):
    """Parses the page: tags balanced (SVG content included), no external resource."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.external: list[str] = []
        self.imgs: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        for k in ("src", "href"):
            v = a.get(k) or ""
            if v.startswith(("http:", "https:", "//")):
                self.external.append(v)
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()


def _check_page(html: str) -> _Checker:
    c = _Checker()
    c.feed(html)
    c.close()
    assert html.startswith("<!DOCTYPE html>")
    assert not c.errors, c.errors[:5]
    assert not c.stack, c.stack
    assert not c.external, c.external
    return c


def _results(root: Path) -> dict[str, object]:
    rng = np.random.default_rng(0)
    n = 3000
    base = pl.DataFrame(
        {"SNP": [f"rs{i}" for i in range(n)], "CHR": rng.choice(["1", "2", "X"], n), "BP": rng.integers(1, 10**6, n)}
    )
    p = rng.uniform(size=n)
    p[:5] = 1e-12
    gw = pl.concat(
        [
            base.with_columns(lhs=pl.lit(f), op=pl.lit("~"), rhs=pl.lit("SNP"), p=pl.Series(p**k))
            for f, k in (("F1", 1.0), ("F2", 1.5))
        ]
    ).with_columns(log10p=-pl.col("p").log10())
    params = {
        "method": "gsem.user_gwas",
        "model": "F1 =~ A + B\nF2 =~ C + D\nF1 ~ SNP\nF2 ~ SNP",
        "estimation": "DWLS",
        "sumstats": "/data/merged.parquet",
    }
    sink = BatchSink(root / "gsem" / "gwas", params)
    sink.write(0, gw.head(3000))
    sink.write(1, gw.tail(3000))
    sink.finalize(2, metadata={"polgen.method": "gsem.user_gwas"})
    lf = base.with_columns(P=pl.Series(p), T=pl.lit(1.0), MONOMORPHIC=pl.lit(False)).with_columns(
        P_CALIBRATED=pl.col("P"), LOG10P=-pl.col("P").log10()
    )
    s2 = BatchSink(
        root / "lfmm" / "assoc",
        {"method": "lfmm.test", "K": 3, "calibrate": "gif", "model": {"eigenvalues": [9.0, 4.0, 2.0, 1.0]}},
    )
    s2.write(0, lf)
    s2.finalize(1)
    from polgen.gsem.covstruc import CovStruc
    from polgen.gsem.fit_models import usermodel

    S = np.array([[0.30, 0.10, 0.08], [0.10, 0.25, 0.07], [0.08, 0.07, 0.20]])
    cs = CovStruc(S=S, V=np.diag(np.full(6, 1e-4)), I=np.eye(3), N=np.full(6, 1e4), m=1e6, trait_names=["A", "B", "C"])
    usermodel(cs, "F1 =~ A + B + C").save(str(root / "gsem" / "usermodel.parquet"))
    pl.DataFrame({"K": [1, 2, 3], "EIGENVALUE": [5.0, 2.0, 1.0], "P": [1e-5, 0.01, 0.5]}).write_parquet(
        root / "lfmm" / "choose_k.parquet"
    )
    pl.DataFrame(
        {"method": ["gsem"], "step": ["gwas"], "status": ["ok"], "seconds": [1.0], "result": ["fine"]}
    ).write_parquet(root / "demo_summary.parquet")
    return {"params": params, "sha": sha256_file(root / "gsem" / "gwas" / "part-000000.parquet")}


def test_report_names_parameters_and_embeds_every_figure(tmp_path):
    root = tmp_path / "res"
    want = _results(root)
    out = report(root, tmp_path / "r.html")
    html = out.read_text()
    c = _check_page(html)
    for k, v in want["params"].items():  # manifest parameters
        assert f"<th>{k}</th>" in html
        if k != "model":
            assert str(v) in html
    assert want["sha"] in html  # part checksums recorded in the manifest
    assert "F1 ~ SNP" in html and "F2 ~ SNP" in html  # one Manhattan/QQ pair per gsem parameter
    caps = re.findall(r'<figure id="figure-(\d+)">.*?<figcaption>Figure (\d+): ([^<]+)</figcaption>', html, re.S)
    assert [a for a, _, _ in caps] == [b for _, b, _ in caps] == [str(i + 1) for i in range(len(caps))]
    names = [t for _, _, t in caps]
    assert sum(n.startswith("Manhattan plot") for n in names) == 3  # F1, F2, the LFMM covariate
    assert sum(n.startswith("QQ plot") for n in names) == 3
    assert any(n.startswith("Path diagram") for n in names)
    assert sum(n.startswith("Scree plot") for n in names) == 2
    for img in c.imgs:  # every picture is an embedded PNG
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
        assert img.get("alt")
    for svg in re.findall(r"<svg.*?</svg>", html, re.S):
        ET.fromstring(svg)
    assert "Provenance" in html and "polgen" in html
    assert html.index("Summary") < html.index("gsem.user_gwas")  # the demo summary comes first
    # the default output path, and report_html agrees on the sections
    assert report(root).name == "report.html"
    assert re.findall(r"<h2>(.*?)</h2>", report_html(root)) == re.findall(r"<h2>(.*?)</h2>", html)


def test_report_without_matplotlib_keeps_the_tables(tmp_path, monkeypatch):
    import polgen.plot.html_report as rep
    from polgen.plot import MissingExtraError

    def missing():
        raise MissingExtraError("pictures need matplotlib: pip install 'polgen[plot]'")

    monkeypatch.setattr(rep, "require_matplotlib", missing)
    root = tmp_path / "res"
    _results(root)
    html = report_html(root)
    c = _check_page(html)
    assert not c.imgs and "polgen[plot]" in html
    assert "<svg" in html  # path diagrams need no matplotlib
    assert "gsem.user_gwas" in html


def test_report_of_an_empty_or_missing_folder(tmp_path):
    from polgen.errors import InputError

    (tmp_path / "empty").mkdir()
    assert "No results" in report_html(tmp_path / "empty")
    with pytest.raises(InputError):
        report_html(tmp_path / "nope")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="polgen")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_plot_and_report(tmp_path, capsys):
    root = tmp_path / "res"
    _results(root)
    assert (
        _cli(
            [
                "plot",
                "manhattan",
                str(root / "gsem" / "gwas"),
                "--lhs",
                "F2",
                "-o",
                str(tmp_path / "m.png"),
                "--annotate",
                "2",
            ]
        )
        == 0
    )
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert _cli(["plot", "qq", str(root / "lfmm" / "assoc"), "-o", str(tmp_path / "q.svg")]) == 0
    ET.parse(tmp_path / "q.svg")
    assert _cli(["plot", "path", str(root / "gsem" / "usermodel.parquet"), "-o", str(tmp_path / "p.svg")]) == 0
    assert _cli(["plot", "path", "--model", "F1 =~ A + B + C; F1 ~ SNP", "-o", str(tmp_path / "p2.svg")]) == 0
    assert 'data-rhs="SNP"' in (tmp_path / "p2.svg").read_text()
    assert _cli(["plot", "scree", str(root / "lfmm" / "choose_k.parquet"), "-o", str(tmp_path / "s.png")]) == 0
    cells = pl.DataFrame({"x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 0.0], "v": [1.0, 2.0, 3.0]})
    cells.write_parquet(tmp_path / "cells.parquet")
    assert (
        _cli(["plot", "spatial", str(tmp_path / "cells.parquet"), "--values", "v", "-o", str(tmp_path / "c.png")]) == 0
    )
    vec = cells.with_columns(dx=pl.lit(1.0), dy=pl.lit(-0.5))
    vec.write_csv(tmp_path / "vec.tsv", separator="\t")
    assert _cli(["plot", "transitions", str(tmp_path / "vec.tsv"), "--grid", "0", "-o", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert _cli(["report", str(root), "-o", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "lambda_GC" in out
    _check_page((tmp_path / "r.html").read_text())


def test_cli_wired_into_polgen_main(tmp_path, monkeypatch, capsys):
    """Through polgen.cli.main as the lead wires it (METHOD_CLIS gains polgen.plot.cli): typed errors
    print one line and exit 2."""
    import polgen.cli as C

    if "polgen.plot.cli" not in C.METHOD_CLIS:
        monkeypatch.setattr(C, "METHOD_CLIS", (*C.METHOD_CLIS, "polgen.plot.cli"))
    bad = tmp_path / "t.tsv"
    bad.write_text("CHR\tBP\tSNP\n1\t10\trs1\n")
    assert C.main(["plot", "manhattan", str(bad), "-o", str(tmp_path / "m.png")]) == 2
    assert "no P column" in capsys.readouterr().err
    root = tmp_path / "res"
    _results(root)
    assert C.main(["report", str(root)]) == 0
    assert (root / "report.html").exists()


@pytest.mark.slow
def test_demo_report_on_a_real_demo_run(tmp_path):
    """Real-format data: polgen demo's outputs (gsem, lfmm, stlr) and the report it ends with."""
    from polgen.demo import run_demo
    from polgen.plot import demo_report

    summary = run_demo(tmp_path / "demo", small=True, progress=False)
    assert summary.filter(pl.col("status") != "ok").height == 0, summary
    path = demo_report(tmp_path / "demo")
    assert path is not None
    html = path.read_text()
    _check_page(html)
    params = json.loads(
        (tmp_path / "demo" / "lfmm" / "results" / "associations" / "_polgen_manifest.jsonl").read_text().splitlines()[0]
    )["params"]
    assert "<th>est_rate</th>" in html or all(f"<th>{k}</th>" in html for k in params)
    names = re.findall(r"<figcaption>Figure \d+: ([^<]+)</figcaption>", html)
    for what in (
        "Manhattan plot of gsem",
        "QQ plot of gsem",
        "Manhattan plot of lfmm",
        "Path diagram",
        "Tissue map",
        "expression change",
    ):
        assert any(n.startswith(what) or what in n for n in names), (what, names)


def test_report_hashes_the_inputs_a_run_names(tmp_path, monkeypatch):
    """The Inputs table: every file or folder a run's parameters name, with its SHA-256 as found
    when the report is written (relative names resolved against the working directory)."""
    data = tmp_path / "data"
    (data / "ld").mkdir(parents=True)
    pl.DataFrame({"SNP": ["rs1", "rs2"], "beta.A": [0.1, 0.2]}).write_parquet(data / "sumstats.parquet")
    (data / "ld" / "1.l2.M_5_50").write_text("100\n")
    (data / "ld" / "2.l2.M_5_50").write_text("200\n")
    params = {
        "method": "gsem.user_gwas",
        "model": "F1 =~ A + B",  # text, not a path
        "sumstats": "data/sumstats.parquet",  # relative to the working directory
        "ld": str(data / "ld"),
        "others": [str(data / "missing.parquet")],  # not found: not listed
    }
    sink = BatchSink(tmp_path / "res" / "gwas", params)
    sink.write(0, pl.DataFrame({"SNP": ["rs1"], "lhs": ["F1"], "op": ["~"], "rhs": ["SNP"], "p": [0.5]}))
    sink.finalize(1)
    monkeypatch.chdir(tmp_path)
    html = report_html(tmp_path / "res", pictures=False)
    assert "<h3>Inputs</h3>" in html
    assert sha256_file(data / "sumstats.parquet") in html
    import hashlib

    h = hashlib.sha256()
    for name in ("1.l2.M_5_50", "2.l2.M_5_50"):
        h.update(f"{name}\0{sha256_file(data / 'ld' / name)}\n".encode())
    assert f"{h.hexdigest()} (folder of 2 files)" in html
    inputs = html[html.index("<h3>Inputs</h3>") :]
    inputs = inputs[: inputs.index("</table>")]
    assert "missing.parquet" not in inputs and "F1 =~" not in inputs
