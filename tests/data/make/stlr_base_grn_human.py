"""Make polgen/stlr/data/base_grn_human.parquet from DoRothEA's human regulons.

Usage: python tests/data/make/stlr_base_grn_human.py <dorothea_hs.rda>
where dorothea_hs.rda is ``data/dorothea_hs.rda`` of saezlab/dorothea (R package 1.7.4, GPL-3; commit
1461fb7, blob 75c9c0b, 894,668 B): 454,504 TF -> target interactions with confidence levels A-E.

Every level (A-E) is kept, as CellOracle's motif-based mouse base GRN keeps every motif hit: a base GRN
only says which TFs may regulate a gene (training and pruning decide which do); the sign (``mor``) is
dropped.  Links are unique (source, target) pairs, sorted by target then source, written like the mouse
table (zstd level 22, no statistics).  Also writes tests/data/stlr/dorothea/dorothea_hs_rows.csv: the
source's rows (tf, confidence, target, mor) for the targets CDKN1A, MYC, APOD, GAPDH, PAX5.
"""

from __future__ import annotations

import sys
import warnings

import polars as pl
import rdata

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # rdata: no constructor for tibble classes (read as data.frame)
    df = rdata.conversion.convert(rdata.parser.parse_file(sys.argv[1]))["dorothea_hs"]
links = (
    pl.DataFrame({"source": df["tf"].astype(str).tolist(), "target": df["target"].astype(str).tolist()})
    .unique()
    .sort(["target", "source"])
)
links.write_parquet(
    "polgen/stlr/data/base_grn_human.parquet", compression="zstd", compression_level=22, statistics=False
)
# the source rows of a few targets, for tests/stlr/test_stlr_human_grn.py (checked against the bundled table)
targets = ["CDKN1A", "MYC", "APOD", "GAPDH", "PAX5"]
sub = df[df["target"].astype(str).isin(targets)]
pl.DataFrame(
    {c: sub[c].astype(str).tolist() for c in ("tf", "confidence", "target")}
    | {"mor": sub["mor"].astype(float).tolist()}
).write_csv("tests/data/stlr/dorothea/dorothea_hs_rows.csv")
print(links.height, links["source"].n_unique(), links["target"].n_unique(), len(df))
