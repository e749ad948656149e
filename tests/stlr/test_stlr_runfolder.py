"""stlr.fit's output folder is a polgen run folder (polgen.io.sink): lock, resume after a kill,
damaged parts retrained, the same bytes as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from polgen import schema
from polgen.errors import InputError, OutputExistsError, OutputLockedError, ResumeError
from polgen.io.sink import LOCK, MANIFEST, SUCCESS, BatchSink, PartNames
from polgen.stlr.features import orphan_genes
from polgen.stlr.synthetic import make_tissue
from polgen.stlr.train import fit

TISSUE = dict(n_cells=300, n_genes=24, n_clusters=2, seed=2, extent=600.0)


def _setup():
    t = make_tissue(**TISSUE)
    orphans = set(orphan_genes(t.links, t.var_names, t.var_names))
    genes = [g for g in t.var_names if g not in orphans][:5]
    assert len(genes) == 5
    return t, t.to_anndata(), genes


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: the bytes every interrupted or repaired run must end with."""
    t, a, genes = _setup()
    out = tmp_path_factory.mktemp("ref") / "run"
    fit(a, genes, out=out, lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)
    return genes, {g: (out / f"{g}_betadata.parquet").read_bytes() for g in genes}


def _same_as_reference(out: Path, reference) -> None:
    genes, want = reference
    for g in genes:
        assert (out / f"{g}_betadata.parquet").read_bytes() == want[g], g
    assert sorted(p.name for p in out.glob("*_betadata.parquet")) == sorted(f"{g}_betadata.parquet" for g in genes)
    assert json.loads((out / "stlr_run.json").read_text())["status"] == "done"
    assert (out / SUCCESS).exists() and not (out / LOCK).exists()


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()[1:] if x.strip()]


def test_layout_and_metadata(tmp_path, reference):
    import pyarrow.parquet as pq

    t, a, genes = _setup()
    out = tmp_path / "run"
    fit(a, genes, out=out, lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)
    _same_as_reference(out, reference)
    header = json.loads((out / MANIFEST).read_text().splitlines()[0])
    assert header["params"] == json.loads((out / "stlr_run.json").read_text())["params"]
    assert [r["file"] for r in _records(out)] == [f"{g}_betadata.parquet" for g in genes]
    schema.validate(out, "stlr_betadata")  # every betadata file against the declared output
    md = pq.read_schema(out / f"{genes[0]}_betadata.parquet").metadata
    assert json.loads(md[b"polgen.params"]) == header["params"]
    assert set(json.loads(md[b"polgen.stlr.r2"])) == set(t.cluster_labels)


def test_second_fit_on_the_same_folder_fails_at_once(tmp_path, reference, monkeypatch):
    import polgen.stlr.train as train

    t, a, genes = _setup()
    out = tmp_path / "run"
    kw = dict(lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)
    real = train.fit_gene
    seen: list[BaseException] = []

    def nested(ctx, gene, *args, **kwargs):
        if not seen:  # while the first run trains its first gene, a second run starts on the same folder
            before = sorted(p.name for p in out.iterdir())
            t0 = time.perf_counter()
            for extra in (dict(), dict(resume=True), dict(overwrite=True)):
                try:
                    fit(a, genes, out=out, **kw, **extra)
                except OutputLockedError as exc:
                    seen.append(exc)
            assert time.perf_counter() - t0 < 30
            assert sorted(p.name for p in out.iterdir()) == before  # the second run touched nothing
        return real(ctx, gene, *args, **kwargs)

    monkeypatch.setattr(train, "fit_gene", nested)
    fit(a, genes, out=out, **kw)
    assert len(seen) == 3 and all(str(out) in str(e) for e in seen)
    _same_as_reference(out, reference)


def test_a_run_of_another_process_holds_the_lock(tmp_path):
    t, a, genes = _setup()
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from polgen.io.sink import OutputLock
            with OutputLock({str(out)!r}):
                print("locked", flush=True)
                time.sleep(120)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match="another polgen run"):
            fit(a, genes, out=out, lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its holder
    fit(a, genes[:1], out=out, lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)


KILLED = """
import os, sys
import polgen.stlr.train as train
from polgen.stlr.synthetic import make_tissue

out, where, genes = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
t = make_tissue(**{tissue!r})
calls = []
real_fit, real_write = train.fit_gene, train.write_part

def fit_gene(*args, **kwargs):
    calls.append(1)
    if where == "training" and len(calls) == 3:
        os._exit(9)  # killed while training the third gene: two genes recorded
    return real_fit(*args, **kwargs)

def write_part(*args, **kwargs):
    info = real_write(*args, **kwargs)
    if where == "recording" and len(calls) == 3:
        os._exit(9)  # killed after the third file is in place, before the driver records it
    return info

train.fit_gene, train.write_part = fit_gene, write_part
train.fit(t.to_anndata(), genes, out=out, lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)
"""


@pytest.mark.parametrize("where", ["training", "recording"])
def test_killed_fit_finishes_with_resume(tmp_path, reference, where):
    t, a, genes = _setup()
    out = tmp_path / "run"
    env = dict(os.environ, POLGEN_PROGRESS="0")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED.format(tissue=TISSUE), str(out), where, ",".join(genes)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 9, proc.stderr
    assert [r["file"] for r in _records(out)] == [f"{g}_betadata.parquet" for g in genes[:2]]
    assert json.loads((out / "stlr_run.json").read_text())["status"] == "running"
    assert (out / f"{genes[2]}_betadata.parquet").exists() == (where == "recording")
    kw = dict(lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)
    with pytest.raises(OutputExistsError):
        fit(a, genes, out=out, **kw)
    done = {g: (out / f"{g}_betadata.parquet").stat().st_mtime_ns for g in genes[:2]}
    res = fit(a, genes, out=out, resume=True, **kw)
    assert sorted(res.scores["gene"].unique().to_list()) == sorted(genes[2:])
    assert {g: (out / f"{g}_betadata.parquet").stat().st_mtime_ns for g in genes[:2]} == done
    _same_as_reference(out, reference)


def test_damaged_parts_are_retrained(tmp_path, reference):
    t, a, genes = _setup()
    out = tmp_path / "run"
    kw = dict(lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)
    fit(a, genes, out=out, **kw)
    f = {g: out / f"{g}_betadata.parquet" for g in genes}
    raw = bytearray(f[genes[0]].read_bytes())
    raw[10] ^= 0xFF  # a flipped byte, same size
    f[genes[0]].write_bytes(bytes(raw))
    f[genes[1]].write_bytes(f[genes[1]].read_bytes()[:-20])  # torn
    f[genes[2]].unlink()  # lost
    f[genes[3]].write_bytes(reference[1][genes[4]])  # another gene's valid file
    kept = f[genes[4]].stat().st_mtime_ns
    res = fit(a, genes, out=out, resume=True, **kw)
    assert sorted(res.scores["gene"].unique().to_list()) == sorted(genes[:4])
    assert f[genes[4]].stat().st_mtime_ns == kept
    _same_as_reference(out, reference)


def test_torn_manifest_line_and_stray_temp_file(tmp_path, reference):
    t, a, genes = _setup()
    out = tmp_path / "run"
    kw = dict(lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)
    fit(a, genes, out=out, **kw)
    text = (out / MANIFEST).read_text()
    (out / MANIFEST).write_text(text[: len(text) - 25])  # the last record torn by a kill
    (out / f".{genes[0]}_betadata.parquet.tmp-1-deadbeef").write_bytes(b"partial")
    res = fit(a, genes, out=out, resume=True, **kw)
    assert res.scores["gene"].unique().to_list() == [genes[-1]]
    assert not list(out.glob(".*.tmp-*"))
    _same_as_reference(out, reference)


def test_resume_with_another_selection_and_refusals(tmp_path, reference):
    t, a, genes = _setup()
    out = tmp_path / "run"
    kw = dict(lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)
    fit(a, genes[:2], out=out, **kw)
    res = fit(a, genes, out=out, resume=True, **kw)
    assert sorted(res.scores["gene"].unique().to_list()) == sorted(genes[2:])
    _same_as_reference(out, reference)
    with pytest.raises(ResumeError, match="radius"):
        fit(a, genes, out=out, resume=True, radius=150.0, **kw)
    with pytest.raises(OutputExistsError):
        fit(a, genes, out=out, **kw)
    # overwrite replaces the run: betadata files of genes outside the new selection go too
    fit(a, genes[:1], out=out, overwrite=True, **kw)
    assert [p.name for p in out.glob("*_betadata.parquet")] == [f"{genes[0]}_betadata.parquet"]
    # betadata files without a run manifest are not silently replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / f"{genes[0]}_betadata.parquet").write_bytes(reference[1][genes[0]])
    with pytest.raises(OutputExistsError, match="no polgen manifest"):
        fit(a, genes, out=foreign, **kw)


def test_folder_of_an_earlier_polgen_needs_overwrite(tmp_path, reference):
    t, a, genes = _setup()
    out = tmp_path / "old"
    out.mkdir()
    (out / "stlr_run.json").write_text(json.dumps({"params": {}, "genes": genes, "status": "running"}))
    (out / "stlr_genes.jsonl").write_text("")
    kw = dict(lr=t.lr, grn=t.links, cluster_key="cell_type", progress=False)
    with pytest.raises(ResumeError, match="overwrite=True"):
        fit(a, genes, out=out, resume=True, **kw)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        fit(a, genes, out=out, **kw)
    fit(a, genes, out=out, overwrite=True, **kw)
    assert not (out / "stlr_genes.jsonl").exists()
    _same_as_reference(out, reference)


def test_named_parts_of_the_sink(tmp_path):
    """The sink's named-part layout on its own: parts matched to batches by file name on resume."""
    import polars as pl

    out = tmp_path / "named"
    names = PartNames(("A_x.parquet", "B_x.parquet"), "*_x.parquet")
    sink = BatchSink(out, {"p": 1}, parts=names)
    for b in range(2):
        sink.write(b, pl.DataFrame({"v": [b]}))
    sink.finalize(2)
    assert sorted(p.name for p in out.glob("*_x.parquet")) == ["A_x.parquet", "B_x.parquet"]
    # another selection, in another order: B is done (now batch 0), C is pending, A is left as it is
    again = BatchSink(out, {"p": 1}, resume=True, parts=PartNames(("B_x.parquet", "C_x.parquet"), "*_x.parquet"))
    assert again.pending(range(2)) == [1] and again.completed[0].file == "B_x.parquet"
    again.write(1, pl.DataFrame({"v": [2]}))
    again.finalize(2)
    assert (out / "A_x.parquet").exists() and pl.read_parquet(out / "C_x.parquet")["v"].to_list() == [2]
    # overwrite clears every file of the pattern
    BatchSink(out, {"p": 2}, overwrite=True, parts=PartNames(("C_x.parquet",), "*_x.parquet"))
    assert not list(out.glob("*_x.parquet"))
    for bad in [("a/b_x.parquet",), (".h_x.parquet",), ("A_x.parquet", "A_x.parquet"), ("A.csv",), (MANIFEST,)]:
        with pytest.raises(InputError):
            PartNames(bad, "*_x.parquet")
