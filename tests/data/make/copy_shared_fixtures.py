"""Copy the ../shared fixture data the tests read into tests/data, or check the copies against ../shared.

    python tests/data/make/copy_shared_fixtures.py [--shared DIR]          # (re)write the copies
    python tests/data/make/copy_shared_fixtures.py --check [--shared DIR]  # exit 1 if a copy drifted

``--shared`` defaults to ``$POLGEN_SHARED`` or ``../shared`` beside the project.  Only fixture *data*
is copied (provenance in tests/data/gsem/fixtures/PROVENANCE.md and tests/data/stlr/PROVENANCE.md):

* ``fixtures/gsem/**.json`` -> ``tests/data/gsem/fixtures/`` byte for byte (the files the tests read).
* ``data/stlr/cellchat_mouse.csv`` -> ``tests/data/stlr/`` byte for byte.
* ``data/stlr/mm10_TFinfo_*.parquet`` -> the rows of the genes test_stlr_betadata.py reads
  (:data:`GRN_GENES`), every column, zstd (without the pandas metadata: its index is a RangeIndex).
* ``data/stlr/human_tonsil_betadata/*.parquet`` -> every cell (FOXO1; PAX5 only its first
  :data:`PAX5_CELLS`), ``beta0``, the first :data:`PER_KIND` columns of each beta kind (TF, ligand$receptor,
  ligand#TF), the obs columns :data:`OBS` (one of each type) and the pandas index ``NAME``, zstd.

``--check`` verifies that each JSON/CSV copy equals its source byte for byte and each parquet copy is an
exact subset (same column types, same values, same pandas index) of its source, and that the copies hold
exactly what this script would write.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data"
GSEM_OUT = DATA / "gsem" / "fixtures"
STLR_OUT = DATA / "stlr"

GSEM_FIXTURES = [
    "commonfactor.json",
    "cov_to_cor.json",
    "gwas_per_snp.json",
    "near_pd.json",
    "reorder.json",
    "s_full.json",
    "sem_1factor.json",
    "sem_2factor.json",
    "v_full.json",
    "v_snp_conservative.json",
    "v_snp_none.json",
    "v_snp_standard.json",
    "vech_3x3.json",
    "vech_4x4.json",
    "z_pre.json",
    "newer/enrich_synth.json",
    "newer/fusion/trait1.dat",
    "newer/fusion/trait2.dat",
    "newer/fusion_read.json",
    "newer/gls_bands.json",
    "newer/gwas_options.json",
    "newer/ldsc_chisqmax.json",
    "newer/ldsc_liability.json",
    "newer/ldsc_select_odd.json",
    "newer/ldsc_stand.json",
    "newer/ldsc_synth.json",
    "newer/multigene_synth.json",
    "newer/multisnp_synth.json",
    "newer/paldsc.json",
    "newer/rgmodel.json",
    "newer/sem_1factor_ml.json",
    "newer/sem_3factor.json",
    "newer/sem_misspecified.json",
    "newer/simldsc_synth.json",
    "newer/sldsc_synth.json",
    "newer/subsv.json",
    "newer/summary_gls.json",
    "newer/write_model.json",
]
STLR_VERBATIM = ["cellchat_mouse.csv"]

GRN_SOURCE = "mm10_TFinfo_dataframe_gimmemotifsv5_fpr1_threshold_10_20210630.parquet"
GRN_GENES = ["Actb", "Gata1", "Spi1"]
GRN_COPY = GRN_SOURCE.replace(".parquet", "." + "_".join(GRN_GENES) + ".parquet")

BETA_DIR = "human_tonsil_betadata"
BETA_GENES = ["FOXO1", "PAX5"]
PER_KIND = 3
PAX5_CELLS = 50
INDEX = "NAME"
# obs columns the reference appends: one of each Arrow type (dictionary, int64, int8, double) and x, y
OBS = ["cell_type", "n_genes_by_counts", "cell_type_int", "x", "y"]


def _beta_kind(col: str) -> str | None:
    if col == "beta0":
        return "beta0"
    if not col.startswith("beta_"):
        return None
    return "lr" if "$" in col else "tfl" if "#" in col else "tf"


def beta_columns(names: list[str]) -> list[str]:
    """beta0, the first PER_KIND columns of each beta kind, the OBS columns and the index, in file order."""
    seen: dict[str, int] = {}
    keep = []
    for c in names:
        kind = _beta_kind(c)
        if (kind is None and c in (*OBS, INDEX)) or (kind and seen.get(kind, 0) < (1 if kind == "beta0" else PER_KIND)):
            keep.append(c)
            if kind is not None:
                seen[kind] = seen.get(kind, 0) + 1
    return keep


def _index_columns(path: Path) -> list:
    md = pq.read_schema(path).metadata or {}
    return json.loads(md[b"pandas"])["index_columns"] if b"pandas" in md else []


def grn_subset(shared: Path) -> pa.Table:
    """The source's rows of GRN_GENES (file order), every column; without the pandas metadata (the
    source's index is a plain RangeIndex, so it carries nothing) to keep 1,081 columns' footer small."""
    t = pq.read_table(shared / "data" / "stlr" / GRN_SOURCE)
    return t.filter(pc.is_in(t.column("gene_short_name"), pa.array(GRN_GENES))).replace_schema_metadata(None)


def beta_subset(shared: Path, gene: str) -> pd.DataFrame:
    src = shared / "data" / "stlr" / BETA_DIR / f"{gene}_betadata.parquet"
    cols = [c for c in beta_columns(pq.read_schema(src).names) if c != INDEX]
    df = pd.read_parquet(src, columns=cols)
    assert df.index.name == INDEX, f"{src}: pandas index is {df.index.name!r}, not {INDEX!r}"
    return df if gene != "PAX5" else df.iloc[:PAX5_CELLS]


def _write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, compression="zstd", compression_level=19)


def write(shared: Path) -> None:
    for name in GSEM_FIXTURES:
        (GSEM_OUT / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared / "fixtures" / "gsem" / name, GSEM_OUT / name)
    for name in STLR_VERBATIM:
        STLR_OUT.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared / "data" / "stlr" / name, STLR_OUT / name)
    # 1,081 columns of 3 rows: the footer is the file, so no statistics, dictionaries or Arrow schema
    pq.write_table(
        grn_subset(shared),
        STLR_OUT / GRN_COPY,
        compression="zstd",
        write_statistics=False,
        use_dictionary=False,
        store_schema=False,
    )
    for gene in BETA_GENES:
        _write(beta_subset(shared, gene), STLR_OUT / BETA_DIR / f"{gene}_betadata.parquet")


def _subset_problems(copy: Path, src: Path, key: str | None, rows: pa.Table | None = None) -> list[str]:
    """Problems making ``copy`` other than an exact subset of ``src`` (columns, types, rows by ``key``)."""
    out = []
    c, s = pq.read_table(copy), pq.read_table(src)
    missing = [n for n in c.column_names if n not in s.column_names]
    if missing:
        return [f"{copy}: columns not in {src}: {missing[:5]}"]
    s = s.select(c.column_names)
    for n in c.column_names:
        if c.schema.field(n).type != s.schema.field(n).type:
            out.append(f"{copy}: column {n} is {c.schema.field(n).type}, {s.schema.field(n).type} in {src}")
    if key is not None:
        pos = {v: i for i, v in enumerate(s.column(key).to_pylist())}
        idx = [pos.get(v) for v in c.column(key).to_pylist()]
        if None in idx:
            return out + [f"{copy}: {key} values not in {src}"]
        s = s.take(pa.array(idx))
    elif rows is not None:
        s = rows.select(c.column_names)
    if not c.equals(s.replace_schema_metadata(c.schema.metadata)):
        out.append(f"{copy}: values differ from the matching rows of {src}")
    return out


def check(shared: Path) -> list[str]:
    problems = []
    pairs = [(GSEM_OUT / n, shared / "fixtures" / "gsem" / n) for n in GSEM_FIXTURES]
    pairs += [(STLR_OUT / n, shared / "data" / "stlr" / n) for n in STLR_VERBATIM]
    for copy, src in pairs:
        if not copy.exists():
            problems.append(f"{copy} missing")
        elif not filecmp.cmp(copy, src, shallow=False):
            problems.append(f"{copy} differs from {src}")
    # the GRN copy: every column, exactly the source's rows of GRN_GENES (in file order)
    src = shared / "data" / "stlr" / GRN_SOURCE
    s = pq.read_table(src)
    want = s.filter(pc.is_in(s.column("gene_short_name"), pa.array(GRN_GENES)))
    copy = STLR_OUT / GRN_COPY
    problems += _subset_problems(copy, src, None, rows=want)
    if pq.read_schema(copy).names != s.column_names:
        problems.append(f"{copy}: columns are not all of {src}'s, in order")
    for gene in BETA_GENES:
        src = shared / "data" / "stlr" / BETA_DIR / f"{gene}_betadata.parquet"
        copy = STLR_OUT / BETA_DIR / f"{gene}_betadata.parquet"
        problems += _subset_problems(copy, src, INDEX)
        if _index_columns(copy) != _index_columns(src):
            problems.append(f"{copy}: pandas index {_index_columns(copy)} differs from {src}'s")
        names = pq.read_schema(copy).names
        if names != beta_columns(pq.read_schema(src).names):
            problems.append(f"{copy}: columns are not the script's selection")
        n, n_src = pq.read_metadata(copy).num_rows, pq.read_metadata(src).num_rows
        if n != (n_src if gene != "PAX5" else PAX5_CELLS):
            problems.append(f"{copy}: {n} cells ({n_src} in {src})")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--shared",
        type=Path,
        default=Path(os.environ.get("POLGEN_SHARED", ROOT.parent / "shared")),
        help="the ../shared folder (default: $POLGEN_SHARED or ../shared beside the project)",
    )
    ap.add_argument("--check", action="store_true", help="only compare the copies with ../shared")
    a = ap.parse_args(argv)
    if not (a.shared / "fixtures" / "gsem").is_dir():
        print(f"{a.shared} is not ../shared (no fixtures/gsem)", file=sys.stderr)
        return 2
    if not a.check:
        write(a.shared)
    problems = check(a.shared)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{'checked' if a.check else 'wrote and checked'}: {'OK' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
