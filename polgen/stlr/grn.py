"""Networks for SpaceTravLR: ligand-receptor database, base GRN, TF-ligand (NicheNet) links.

* CellChat table: ``ligand, receptor, pathway, signaling``; complexes are joined by ``_`` and are
  expanded into every ligand-subunit x receptor-subunit pair, in file order (row, then ligand
  subunit, then receptor subunit), as the reference's ``expand_paired_interactions`` does.
* CellOracle base GRN: ``peak_id, gene_short_name`` + one 0/1 column per TF; a TF regulates a
  gene when any of the gene's peaks has a non-zero entry.
* Long links table: ``source, target`` (TF -> target gene) with optional ``cluster`` and ``p``;
  CellOracle's per-cluster links (``{cluster: DataFrame(source, target, coef_mean, p, ...)}``,
  the reference's ``co_grn`` / ``celloracle_links.pkl`` content) are flattened into one such
  table with a ``cluster`` column.  A TF regulates a gene when a link ``TF -> gene`` has
  ``p < alpha`` (0.05) in any cluster - the reference's ``CellOracleLinks.get_regulators``;
  tables without ``p`` keep every link.
* NicheNet-style ligand-target matrix: rows are target genes (TFs here), columns ligands.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.stlr.betadata import Betabase, BetaData

SECRETED = "Secreted Signaling"
LR_COLUMNS = ("ligand", "receptor", "pathway", "signaling")


# -- CellChat ---------------------------------------------------------------------------------
def read_cellchat(path: str | os.PathLike) -> pl.DataFrame:
    """Read a CellChat-format ligand-receptor csv/parquet (columns ligand, receptor, pathway, signaling)."""
    p = Path(path)
    if not p.exists():
        raise InputError("ligand-receptor table not found", path=p)
    df = pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p, infer_schema_length=0)
    return _check_lr(df, p)


def _check_lr(df: pl.DataFrame, path=None) -> pl.DataFrame:
    missing = [c for c in ("ligand", "receptor") if c not in df.columns]
    if missing:
        raise SchemaError(f"ligand-receptor table lacks columns {missing}", path=path, column=missing[0])
    if "pathway" not in df.columns:
        df = df.with_columns(pl.lit("Unknown").alias("pathway"))
    if "signaling" not in df.columns:
        df = df.with_columns(pl.lit(SECRETED).alias("signaling"))
    return df.select([pl.col(c).cast(pl.String) for c in LR_COLUMNS])


def expand_complexes(lr: pl.DataFrame) -> pl.DataFrame:
    """One row per ligand subunit x receptor subunit (complexes split on ``_``), in file order."""
    lr = _check_lr(lr)
    return (
        lr.with_columns(pl.col("ligand").str.split("_"), pl.col("receptor").str.split("_"))
        .explode("ligand")
        .explode("receptor")
    )


def lr_table(
    lr: pl.DataFrame,
    var_names: Sequence[str],
    radius: float = 200.0,
    contact_distance: float = 50.0,
    extra_lr: Iterable[tuple[str, str]] | None = None,
) -> pl.DataFrame:
    """Expanded LR pairs with both genes in ``var_names``, plus a ``radius`` column.

    ``radius`` for "Secreted Signaling" rows, ``contact_distance`` for all others (Cell-Cell
    Contact, ECM-Receptor).  ``extra_lr`` pairs are appended as secreted signalling.
    """
    df = expand_complexes(lr)
    vs = pl.Series(list(var_names), dtype=pl.String)
    df = df.filter(pl.col("ligand").is_in(vs.implode()) & pl.col("receptor").is_in(vs.implode()))
    if extra_lr:
        extra = [(str(a), str(b)) for a, b in extra_lr]
        bad = [g for pair in extra for g in pair if g not in set(var_names)]
        if bad:
            raise InputError(f"extra_lr genes not in var_names: {bad[:5]}")
        df = pl.concat(
            [
                df,
                pl.DataFrame(
                    {
                        "ligand": [a for a, _ in extra],
                        "receptor": [b for _, b in extra],
                        "pathway": ["Unknown"] * len(extra),
                        "signaling": [SECRETED] * len(extra),
                    }
                ),
            ]
        )
    return df.with_columns(
        pl.when(pl.col("signaling") == SECRETED)
        .then(pl.lit(float(radius)))
        .otherwise(pl.lit(float(contact_distance)))
        .alias("radius")
    )


def ligand_radii(lr: pl.DataFrame) -> dict[str, float]:
    """``{ligand: radius}`` from each ligand's FIRST row of an :func:`lr_table` (reference rule)."""
    first = lr.select("ligand", "radius").unique(subset="ligand", keep="first", maintain_order=True)
    return dict(zip(first["ligand"].to_list(), first["radius"].to_list()))


# -- base GRN ---------------------------------------------------------------------------------
def read_base_grn(path: str | os.PathLike) -> pl.DataFrame:
    """Read a CellOracle base GRN parquet (peak_id, gene_short_name, TF columns of 0/1)."""
    p = Path(path)
    if not p.exists():
        raise InputError("base GRN file not found", path=p)
    df = pl.read_parquet(p)
    if "gene_short_name" not in df.columns:
        raise SchemaError("base GRN lacks the gene_short_name column", path=p, column="gene_short_name")
    drop = [c for c in df.columns if c.startswith("__index_level")]
    return df.drop(drop)


def base_grn_links(grn: pl.DataFrame, var_names: Sequence[str] | None = None) -> pl.DataFrame:
    """Long ``source`` (TF), ``target`` links of a wide base GRN (non-zero in any of the gene's peaks),
    sorted by target then source.  Vectorised: the TF columns are read as 0/1 in blocks and OR-ed
    per gene, so the 29,308 x 1,079 mm10 table converts in about a second."""
    tfs = sorted(c for c in grn.columns if c not in ("peak_id", "gene_short_name"))
    grn = grn.filter(pl.col("gene_short_name").is_not_null())
    if var_names is not None:
        keep = set(var_names)
        tfs = [t for t in tfs if t in keep]
        grn = grn.filter(pl.col("gene_short_name").is_in(pl.Series(list(keep), dtype=pl.String).implode()))
    empty = pl.DataFrame({"source": [], "target": []}, schema={"source": pl.String, "target": pl.String})
    if not tfs or grn.height == 0:
        return empty
    genes, codes = np.unique(grn["gene_short_name"].cast(pl.String).to_numpy().astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    on = np.zeros((len(genes), len(tfs)), dtype=bool)
    block = 128
    for b in range(0, len(tfs), block):
        cols = tfs[b : b + block]
        try:
            B = grn.select([(pl.col(t).cast(pl.Float64).fill_nan(0.0).fill_null(0.0) != 0) for t in cols]).to_numpy()
        except Exception as exc:  # noqa: BLE001 - polars cast errors: a non-numeric TF column
            raise SchemaError(f"base GRN TF columns must hold numbers ({exc})", column=cols[0]) from None
        on[:, b : b + len(cols)] = np.logical_or.reduceat(B[order], starts, axis=0)
    gi, ti = np.nonzero(on)
    if gi.size == 0:
        return empty
    return pl.DataFrame(
        {"source": np.asarray(tfs, dtype=object)[ti], "target": genes[gi].astype(object)},
        schema={"source": pl.String, "target": pl.String},
    )


def read_links(path: str | os.PathLike) -> pl.DataFrame:
    """Read a long links table (source, target[, cluster, p]) from csv/tsv/parquet."""
    p = Path(path)
    if not p.exists():
        raise InputError("links table not found", path=p)
    if p.suffix == ".parquet":
        df = pl.read_parquet(p)
    else:
        df = pl.read_csv(p, separator="\t" if p.suffix in (".tsv", ".txt") else ",")
    for c in ("source", "target"):
        if c not in df.columns:
            raise SchemaError(f"links table lacks column {c!r}", path=p, column=c)
    return df


def _frame(obj, what: str) -> pl.DataFrame | None:
    """A polars frame from a polars or pandas frame (the pandas index is dropped); else None."""
    if isinstance(obj, pl.DataFrame):
        return obj
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        return None
    if isinstance(obj, pd.DataFrame):
        try:
            return pl.from_pandas(obj.reset_index(drop=True))
        except Exception as exc:  # noqa: BLE001 - unconvertible object columns
            raise InputError(f"{what} cannot be converted to a table: {exc}") from None
    return None


def celloracle_links(links: Mapping) -> pl.DataFrame:
    """CellOracle's per-cluster links ``{cluster: DataFrame(source, target, [coef_mean, p, ...])}``
    (the reference's ``RegulatoryFactory.links``) as one long table with a ``cluster`` column."""
    parts = []
    for cl, df in links.items():
        f = _frame(df, f"links of cluster {cl!r}")
        if f is None:
            raise InputError(f"links of cluster {cl!r} must be a DataFrame, got {type(df).__name__}")
        for c in ("source", "target"):
            if c not in f.columns:
                raise SchemaError(f"links of cluster {cl!r} lack column {c!r}", column=c)
        keep = [c for c in ("source", "target", "coef_mean", "p") if c in f.columns]
        f = f.select(
            [pl.col("source").cast(pl.String), pl.col("target").cast(pl.String)]
            + [pl.col(c).cast(pl.Float64) for c in keep[2:]]
        )
        parts.append(f.with_columns(pl.lit(str(cl)).alias("cluster")))
    if not parts:
        return pl.DataFrame({"source": [], "target": []}, schema={"source": pl.String, "target": pl.String})
    return pl.concat(parts, how="diagonal_relaxed")


def as_links(grn) -> pl.DataFrame:
    """Links (source, target[, cluster, p, ...]) from a long table, a wide base GRN frame, a path,
    CellOracle's ``{cluster: links DataFrame}``, or a ``{target: [TFs]}`` mapping."""
    if grn is None:
        return pl.DataFrame({"source": [], "target": []}, schema={"source": pl.String, "target": pl.String})
    if isinstance(grn, (str, os.PathLike)):
        p = Path(grn)
        if p.suffix == ".parquet" and "gene_short_name" in pl.read_parquet_schema(p):
            return base_grn_links(read_base_grn(p))
        return read_links(p)
    if isinstance(grn, Mapping):
        if grn and all(_frame(v, "links") is not None for v in grn.values()):
            return celloracle_links(grn)
        return pl.DataFrame(
            {"source": [s for t, ss in grn.items() for s in ss], "target": [t for t, ss in grn.items() for _ in ss]},
            schema={"source": pl.String, "target": pl.String},
        )
    f = _frame(grn, "grn")
    if f is not None:
        if "gene_short_name" in f.columns:
            return base_grn_links(f)
        if {"source", "target"} <= set(f.columns):
            return f
    raise InputError(
        "grn must be a links table (source, target), a CellOracle base GRN, a path, CellOracle "
        "{cluster: links} or a {target: [TFs]} mapping"
    )


def regulators(
    links: pl.DataFrame, target: str, var_names: Sequence[str] | None = None, alpha: float = 0.05
) -> list[str]:
    """Sorted TFs regulating ``target`` (excluding itself), restricted to ``var_names``.

    With a ``p`` column only links with ``p < alpha`` count (in any cluster): the reference's
    ``CellOracleLinks.get_regulators(adata, target, alpha=0.05)``.
    """
    sel = links.filter(pl.col("target") == target)
    if "p" in links.columns:
        sel = sel.filter(pl.col("p").cast(pl.Float64) < float(alpha))
    src = sel["source"].unique().to_list()
    keep = set(var_names) if var_names is not None else None
    return sorted(s for s in src if s is not None and s != target and (keep is None or s in keep))


def regulator_map(
    links: pl.DataFrame, var_names: Sequence[str] | None = None, alpha: float = 0.05
) -> dict[str, list[str]]:
    """``{target: sorted regulators}`` for every target of ``links`` (:func:`regulators` in one pass)."""
    sel = links
    if "p" in links.columns:
        sel = sel.filter(pl.col("p").cast(pl.Float64) < float(alpha))
    if var_names is not None:
        sel = sel.filter(pl.col("source").is_in(pl.Series(list(var_names), dtype=pl.String).implode()))
    sel = sel.filter(pl.col("source").is_not_null() & (pl.col("source") != pl.col("target")))
    agg = sel.group_by("target").agg(pl.col("source").unique())
    return {t: sorted(s) for t, s in zip(agg["target"].to_list(), agg["source"].to_list())}


def co_grn_links(co_grn) -> pl.DataFrame:
    """The reference's flattened ``co_grn`` of ``GeneFactory``: every cluster's links concatenated,
    sorted by ``coef_mean`` (descending) and de-duplicated on (source, target), no p-value filter."""
    links = as_links(co_grn)
    if "coef_mean" in links.columns:
        links = links.sort("coef_mean", descending=True, nulls_last=True, maintain_order=True)
    return links.unique(subset=["source", "target"], keep="first", maintain_order=True)


# -- NicheNet ---------------------------------------------------------------------------------
def read_ligand_target(path_or_frame) -> tuple[np.ndarray, list[str], list[str]]:
    """A NicheNet ligand-target matrix as ``(values, row_genes, ligands)``.

    Rows are target genes (regulators), columns ligands; the row names come from the pandas index
    (``__index_level_0__``) or a first string column.
    """
    if isinstance(path_or_frame, (str, os.PathLike)):
        p = Path(path_or_frame)
        if not p.exists():
            raise InputError("ligand-target matrix not found", path=p)
        df = pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p)
    else:
        df = path_or_frame
        try:
            import pandas as pd

            if isinstance(df, pd.DataFrame):
                return df.to_numpy(dtype=np.float64), [str(i) for i in df.index], [str(c) for c in df.columns]
        except ImportError:  # pragma: no cover
            pass
    idx = next((c for c in df.columns if c.startswith("__index_level")), None)
    if idx is None:
        idx = next((c for c in df.columns if df.schema[c] == pl.String), None)
    if idx is None:
        raise SchemaError("ligand-target matrix has no row-name column")
    ligs = [c for c in df.columns if c != idx]
    return df.select(ligs).to_numpy().astype(np.float64), df[idx].cast(pl.String).to_list(), ligs


def restrict_to_co_grn(betas, co_grn):
    """Betadata whose direct TF terms are kept only where the co-GRN has the link ``TF -> gene``.

    The reference's ``GeneFactory(co_grn=...)`` meant to "enforce links to also appear in
    co_grn_links" in splash: the derivative dy/dTF = beta_TF of gene y is kept only for TFs linked
    to y in the flattened co-GRN (:func:`co_grn_links`: any cluster, no p-value filter); all other
    terms (LR, TF-ligand) are untouched.  beta_TF enters splash only through that term, so zeroing
    the unlinked ``beta_<TF>`` columns is the same restriction, and ``perturb`` / ``splash`` of the
    returned :class:`~polgen.stlr.betadata.Betabase` apply it.  The reference's own code zeroes
    every TF term instead (its ``beta_`` prefix comparison never matches) and looks the links up
    with the gene as ``source``; neither bug is reproduced.
    """
    base = Betabase.coerce(betas)
    links = co_grn_links(co_grn)
    pairs = set(zip(links["source"].to_list(), links["target"].to_list()))
    out = []
    for g in base.genes:
        bd = base[g]
        drop = [int(c) for t, c in zip(bd.tfs, bd.tf_cols) if (t, g) not in pairs]
        if drop:
            vals = bd.values.copy()
            vals[:, drop] = 0.0
            bd = BetaData(
                gene=bd.gene, id_kind=bd.id_kind, ids=list(bd.ids), columns=list(bd.columns), values=vals, path=bd.path
            )
        out.append(bd)
    return Betabase(out)
