"""``polgen sql ... --out`` (issue 16): the format follows the extension - .parquet, .tsv, .csv,
.tsv.gz, .csv.gz - and any other name is refused with a typed error before the query runs."""

from __future__ import annotations

import gzip

import numpy as np
import polars as pl
import pytest

from polgen import cli, sql
from polgen.errors import InputError


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(3)
    n = 300
    df = pl.DataFrame(
        {
            "SNP": [f"rs{i}" for i in range(n)],
            "CHR": rng.integers(1, 4, n),
            "BP": rng.integers(1, 10_000, n),
            "P": rng.uniform(size=n) ** 4,
        }
    )
    path = tmp_path / "res.parquet"
    df.write_parquet(path)
    return df, path


@pytest.mark.parametrize(
    "name, sep, gz",
    [("hits.tsv", "\t", False), ("hits.csv", ",", False), ("hits.tsv.gz", "\t", True), ("HITS.CSV.GZ", ",", True)],
)
def test_text_outputs_are_text(results, tmp_path, capsys, name, sep, gz):
    df, path = results
    out = tmp_path / name
    assert cli.main(["sql", "top_hits", "-p", f"source={path}", "-p", "p_max=0.01", "--out", str(out)]) == 0
    raw = out.read_bytes()
    if gz:
        assert raw[:2] == b"\x1f\x8b"
        raw = gzip.decompress(raw)
    assert not raw.startswith(b"PAR1")
    text = raw.decode()
    header = text.splitlines()[0].split(sep)
    assert header[:4] == ["SNP", "CHR", "BP", "P"]
    got = pl.read_csv(raw, separator=sep)
    want = sql.run("top_hits", {"source": df, "p_max": 0.01})
    assert got["SNP"].to_list() == want["SNP"].to_list()
    np.testing.assert_allclose(got["P"].to_numpy(), want["P"].to_numpy(), rtol=1e-12)
    assert f"wrote {want.height} rows to {out}" in capsys.readouterr().out


def test_parquet_output_keeps_metadata(results, tmp_path):
    _, path = results
    out = tmp_path / "hits.parquet"
    lf = sql.run("top_hits", {"source": path}, out=out)
    assert out.read_bytes()[:4] == b"PAR1"
    assert lf.collect().height == pl.read_parquet(out).height
    import pyarrow.parquet as pq

    assert pq.read_schema(out).metadata[b"polgen.query"] == b"top_hits"


@pytest.mark.parametrize("name", ["hits", "hits.txt", "hits.gz", "hits.parquet.zip", "hits.xlsx", ".tsv"])
def test_unknown_extension_is_refused(results, tmp_path, capsys, name):
    _, path = results
    out = tmp_path / name
    with pytest.raises(InputError, match=r"output format .*\.parquet, \.tsv, \.csv, \.tsv\.gz, \.csv\.gz"):
        sql.run("top_hits", {"source": path}, out=out)
    assert cli.main(["sql", "top_hits", "-p", f"source={path}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polgen: error: cannot tell the output format") and name in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.parquet"]  # no temp file, no log


def test_output_format_by_extension():
    assert sql.output_format("a/b/hits.TSV") == ".tsv"
    assert sql.output_format("hits.tsv.gz") == ".tsv.gz"
    assert sql.output_format("x.csv.gz") == ".csv.gz"
    assert sql.output_format("x.parquet") == ".parquet"
