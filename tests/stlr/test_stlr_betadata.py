"""Betadata layouts (polgen, Rust port, Python reference) and the real network files."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from conftest import stlr_data
from polgen.errors import InputError, SchemaError
from polgen.stlr.betadata import Betabase, BetaData, read_betadata, write_betadata
from polgen.stlr.grn import (
    as_links,
    base_grn_links,
    expand_complexes,
    ligand_radii,
    lr_table,
    read_base_grn,
    read_cellchat,
    read_ligand_target,
    regulators,
)


def _bd(gene="Foxp3", kind="Cluster"):
    ids = ["0", "1", "2"] if kind == "Cluster" else ["c1", "c2", "c3"]
    cols = ["beta0", "beta_Tf1", "beta_Lig1$Rec1", "beta_Lig2#Tf1"]
    return BetaData(gene=gene, id_kind=kind, ids=ids, columns=cols, values=np.arange(12, dtype=float).reshape(3, 4) / 7)


@pytest.mark.parametrize("ext", ["parquet", "feather"])
def test_roundtrip_and_underscore_gene(tmp_path, ext):
    bd = _bd("H2_Ab1")
    p = write_betadata(bd, tmp_path / f"H2_Ab1_betadata.{ext}")
    got = read_betadata(p)
    assert got.gene == "H2_Ab1" and got.id_kind == "Cluster" and got.ids == ["0", "1", "2"]
    np.testing.assert_array_equal(got.values, bd.values)
    assert got.tfs == ["Tf1"] and got.lr_pairs == [("Lig1", "Rec1")] and got.tfl_pairs == [("Lig2", "Tf1")]
    assert got.modulators == ["Lig1", "Lig2", "Rec1", "Tf1"]
    first = pq.read_schema(p).names[0] if ext == "parquet" else feather.read_table(p).column_names[0]
    assert first == "Cluster"
    base = Betabase.from_dir(tmp_path)
    assert base.genes == ["H2_Ab1"]
    long = base.to_polars()
    assert long.height == 12 and set(long.columns) == {"gene", "id_kind", "id", "term", "beta"}


def test_rust_layouts(tmp_path):
    # Cluster (seed-only) as integers, CellID (per cell) as strings, written by another tool
    pl.DataFrame(
        {"Cluster": [0, 1], "beta0": [0.1, 0.2], "beta_Tf1": [1.0, 2.0], "beta_Lig1$Rec1": [0.5, 0.0]}
    ).write_parquet(tmp_path / "Gata1_betadata.parquet")
    feather.write_feather(
        pa.table({"CellID": ["a", "b", "c"], "beta0": [0.0, 0.0, 0.0], "beta_Tf2": [1.0, 2.0, 3.0]}),
        tmp_path / "Spi1_betadata.feather",
    )
    base = Betabase.from_dir(tmp_path)
    g = base["Gata1"]
    assert g.id_kind == "Cluster" and g.ids == ["0", "1"]
    rows = g.row_map(["x", "y", "z"], clusters=np.array([1, 0, 1]), cluster_labels=["0", "1"])
    np.testing.assert_array_equal(rows, [1, 0, 1])
    s = base["Spi1"]
    assert s.id_kind == "CellID"
    np.testing.assert_array_equal(s.row_map(["c", "a", "b"]), [2, 0, 1])
    with pytest.raises(InputError, match="no row"):
        s.row_map(["a", "zz"])
    with pytest.raises(InputError, match="absent"):
        g.row_map(["x"], clusters=np.array([0]), cluster_labels=["0"])


def test_bad_betadata(tmp_path):
    pl.DataFrame({"beta0": [0.1]}).write_parquet(tmp_path / "A_betadata.parquet")
    with pytest.raises(SchemaError):
        read_betadata(tmp_path / "A_betadata.parquet")
    with pytest.raises(InputError):
        read_betadata(tmp_path / "missing_betadata.parquet")
    pl.DataFrame({"CellID": ["a"], "beta_X": [float("nan")]}).write_parquet(tmp_path / "B_betadata.parquet")
    with pytest.raises(InputError, match="NaN"):
        read_betadata(tmp_path / "B_betadata.parquet")
    with pytest.raises(InputError):
        read_betadata(tmp_path / "notbeta.parquet")


def test_human_tonsil_betadata_load():
    d = stlr_data("human_tonsil_betadata")
    base = Betabase.from_dir(d)
    assert set(base.genes) == {"FOXO1", "PAX5"}
    bd = base["FOXO1"]
    assert bd.id_kind == "CellID" and len(bd.ids) == 5778
    assert all(c == "beta0" or c.startswith("beta_") for c in bd.columns)
    assert "cell_type_int" not in bd.columns and len(bd.tfs) > 0 and len(bd.lr_pairs) > 0
    # values are the file's float32 numbers
    raw = pq.read_table(d / "FOXO1_betadata.parquet", columns=[bd.columns[1]]).column(0).to_numpy()
    np.testing.assert_array_equal(bd.values[:, 1], raw.astype(np.float64))


def test_real_cellchat_and_base_grn():
    cc = read_cellchat(stlr_data("cellchat_mouse.csv"))
    assert cc.columns == ["ligand", "receptor", "pathway", "signaling"] and cc.height > 1000
    ex = expand_complexes(cc)
    assert ex.height > cc.height and not ex["receptor"].str.contains("_").any()
    # Tgfb1 with receptor complex Tgfbr1_Tgfbr2 -> two pairs
    t = ex.filter((pl.col("ligand") == "Tgfb1") & pl.col("pathway").eq("TGFb"))
    assert {"Tgfbr1", "Tgfbr2"} <= set(t["receptor"].to_list())
    genes = sorted(set(ex["ligand"].to_list()) | set(ex["receptor"].to_list()))
    lr = lr_table(cc, genes, 200.0, 50.0)
    rad = ligand_radii(lr)
    sig = {r[0]: r[3] for r in ex.rows()[::-1]}  # first row per ligand wins -> iterate reversed
    assert all(rad[l] == (200.0 if s == "Secreted Signaling" else 50.0) for l, s in sig.items() if l in rad)
    # the CellOracle mm10 base GRN's rows of Actb, Gata1 and Spi1, all 1,081 columns (tests/data/stlr)
    grn = read_base_grn(
        stlr_data("mm10_TFinfo_dataframe_gimmemotifsv5_fpr1_threshold_10_20210630.Actb_Gata1_Spi1.parquet")
    )
    assert "gene_short_name" in grn.columns and grn.width == 1081 - (1 if "peak_id" not in grn.columns else 0)
    sub = grn.filter(pl.col("gene_short_name").is_in(["Gata1", "Spi1", "Actb"]))
    links = base_grn_links(sub)
    assert links.columns == ["source", "target"] and links.height > 0
    # regulators agree with a direct scan of the wide table
    row = sub.filter(pl.col("gene_short_name") == "Actb").drop("peak_id", "gene_short_name")
    direct = sorted(c for c in row.columns if row[c].abs().sum() > 0 and c != "Actb")
    assert regulators(links, "Actb") == direct


def test_links_and_ligand_target_readers(tmp_path):
    links = as_links({"G1": ["T1", "T2"], "G2": ["T1"]})
    assert regulators(links, "G1") == ["T1", "T2"]
    pl.DataFrame({"source": ["T1"], "target": ["G3"], "p": [0.01]}).write_csv(tmp_path / "l.csv")
    assert regulators(as_links(str(tmp_path / "l.csv")), "G3") == ["T1"]
    import pandas as pd

    df = pd.DataFrame([[0.1, 0.2], [0.3, 0.0]], index=["T1", "T2"], columns=["L1", "L2"])
    df.to_parquet(tmp_path / "lt.parquet")
    vals, rows, cols = read_ligand_target(tmp_path / "lt.parquet")
    assert rows == ["T1", "T2"] and cols == ["L1", "L2"] and vals[1, 0] == 0.3
    with pytest.raises(InputError):
        as_links(42)
