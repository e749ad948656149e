"""Betadata: trained SpaceTravLR coefficients of one target gene, and all genes (Betabase).

A betadata table has one row per cluster (first column ``Cluster``, seed-only training, as the
Rust port writes it) or per cell (``CellID``; the Python reference writes the cell id as the
pandas index, e.g. ``NAME``), then ``beta0`` (intercept) and ``beta_<modulator>`` columns:
``beta_<TF>``, ``beta_<ligand>$<receptor>``, ``beta_<ligand>#<TF>``.  Other columns (obs columns
the reference appends) are ignored.  Files are ``{gene}_betadata.parquet`` / ``.feather`` /
``.csv``; the gene is everything before ``_betadata`` (so gene names may hold underscores - the
reference cuts at the first ``_``; and its reader cannot read feather, ours does).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
import pyarrow as pa

from polgen.errors import InputError, SchemaError
from polgen.io.sink import write_table_atomic
from polgen.schema import BETA0, BETA_PREFIX, CELL_ID, CLUSTER

log = logging.getLogger("polgen")

SUFFIXES = ("_betadata.parquet", "_betadata.feather", "_betadata.csv")
PREFIX = BETA_PREFIX


@dataclass
class BetaData:
    """Coefficients of one target gene: ``values[row, col]`` for row ids ``ids`` (clusters or cells)."""

    gene: str
    id_kind: str  # "Cluster" or "CellID"
    ids: list[str]
    columns: list[str]  # "beta0" (if present) then "beta_*"
    values: np.ndarray  # float64 (n_rows, n_cols)
    path: str | None = None
    tfs: list[str] = field(init=False)
    lr_pairs: list[tuple[str, str]] = field(init=False)
    tfl_pairs: list[tuple[str, str]] = field(init=False)
    tf_cols: np.ndarray = field(init=False)
    lr_cols: np.ndarray = field(init=False)
    tfl_cols: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.values = np.ascontiguousarray(self.values, dtype=np.float64)
        if self.values.shape != (len(self.ids), len(self.columns)):
            raise SchemaError(
                f"betadata of {self.gene}: values shape {self.values.shape} does not match "
                f"{len(self.ids)} rows x {len(self.columns)} columns",
                path=self.path,
            )
        tfs, lrs, tfls, tc, lc, fc = [], [], [], [], [], []
        for k, col in enumerate(self.columns):
            if not col.startswith(PREFIX):
                continue
            mod = col[len(PREFIX) :]
            if "$" in mod:
                lig, rec = mod.split("$", 1)
                lrs.append((lig, rec))
                lc.append(k)
            elif "#" in mod:
                lig, reg = mod.split("#", 1)
                tfls.append((lig, reg))
                fc.append(k)
            else:
                tfs.append(mod)
                tc.append(k)
        self.tfs, self.lr_pairs, self.tfl_pairs = tfs, lrs, tfls
        self.tf_cols = np.array(tc, dtype=np.int64)
        self.lr_cols = np.array(lc, dtype=np.int64)
        self.tfl_cols = np.array(fc, dtype=np.int64)
        if not np.isfinite(self.values).all():
            r, c = np.argwhere(~np.isfinite(self.values))[0]
            raise InputError(
                f"betadata of {self.gene} holds NaN/inf", path=self.path, column=self.columns[c], row=self.ids[r]
            )

    # -- derived sets ----------------------------------------------------------------------
    @property
    def ligands(self) -> list[str]:
        return [lig for lig, _ in self.lr_pairs]

    @property
    def receptors(self) -> list[str]:
        return [rec for _, rec in self.lr_pairs]

    @property
    def tfl_ligands(self) -> list[str]:
        return [lig for lig, _ in self.tfl_pairs]

    @property
    def tfl_regulators(self) -> list[str]:
        return [reg for _, reg in self.tfl_pairs]

    @property
    def modulators(self) -> list[str]:
        """Unique modulator genes sorted by code point (the splash column order)."""
        genes = (
            set(self.tfs) | set(self.ligands) | set(self.receptors) | set(self.tfl_ligands) | set(self.tfl_regulators)
        )
        return sorted(genes)

    @property
    def is_zero(self) -> bool:
        return not np.any(self.values)

    # -- tables ----------------------------------------------------------------------------
    def to_polars(self) -> pl.DataFrame:
        """The betadata as a Polars frame: ``Cluster``/``CellID`` first, then the beta columns."""
        data = {self.id_kind: pl.Series(self.id_kind, self._id_values())}
        for k, c in enumerate(self.columns):
            data[c] = pl.Series(c, self.values[:, k])
        return pl.DataFrame(data)

    def _id_values(self):
        if self.id_kind == CLUSTER and all(_is_int(s) for s in self.ids):
            return [int(s) for s in self.ids]
        return list(self.ids)

    def row_map(
        self, obs_names: Sequence[str], clusters: np.ndarray | None = None, cluster_labels: Sequence[str] | None = None
    ) -> np.ndarray:
        """Row of this betadata for every cell (int64, n_cells).

        Per-cell betadata are aligned to ``obs_names`` by label; per-cluster betadata map each
        cell's cluster label to its row.  Cells without a row raise :class:`InputError`.
        """
        pos = {s: i for i, s in enumerate(self.ids)}
        if self.id_kind == CELL_ID:
            rows = np.fromiter((pos.get(str(c), -1) for c in obs_names), dtype=np.int64, count=len(obs_names))
            if (rows < 0).any():
                i = int(np.flatnonzero(rows < 0)[0])
                raise InputError(
                    f"betadata of {self.gene} has no row for {int((rows < 0).sum())} cells (first {obs_names[i]!r})",
                    path=self.path,
                    column=CELL_ID,
                )
            return rows
        if clusters is None or cluster_labels is None:
            raise InputError(
                f"betadata of {self.gene} is per cluster; cluster labels of the cells are needed (pass cluster_key=)",
                path=self.path,
                column=CLUSTER,
            )
        labels = [_norm_label(c) for c in cluster_labels]
        code_row = np.array([pos.get(lab, -1) for lab in labels], dtype=np.int64)
        missing = [lab for lab, r in zip(labels, code_row) if r < 0 and np.any(clusters == labels.index(lab))]
        if missing:
            raise InputError(
                f"betadata of {self.gene} has no row for cluster(s) {missing[:10]} present in obs "
                f"(betadata clusters: {self.ids[:10]})",
                path=self.path,
                column=CLUSTER,
            )
        extra = sorted(set(self.ids) - set(labels))
        if extra:
            raise InputError(
                f"betadata of {self.gene} has cluster label(s) {extra[:10]} absent from the "
                f"cells' cluster column (labels: {labels[:10]})",
                path=self.path,
                column=CLUSTER,
            )
        return code_row[np.asarray(clusters, dtype=np.int64)]


def _is_int(s: str) -> bool:
    try:
        return str(int(s)) == s
    except (TypeError, ValueError):
        return False


def _norm_label(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    s = str(v)
    try:
        f = float(s)
        if f.is_integer() and ("." in s) and s.replace(".", "", 1).lstrip("-").isdigit():
            return str(int(f))
    except ValueError:
        pass
    return s


def gene_from_path(path: str | os.PathLike) -> str:
    """Target gene of a betadata file: the name before ``_betadata.<ext>`` (underscores kept)."""
    name = Path(path).name
    for suf in SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    raise InputError("betadata file names must end with _betadata.parquet/.feather/.csv", path=path)


def _pandas_index(md: Mapping[bytes, bytes] | None) -> list[str]:
    """Names of the pandas index columns recorded in an Arrow schema's metadata (none if absent)."""
    if not md or b"pandas" not in md:
        return []
    import json

    try:
        meta = json.loads(md[b"pandas"])
    except ValueError:
        return []
    return [c for c in meta.get("index_columns", []) if isinstance(c, str)]


def _read_frame(p: Path) -> tuple[pl.DataFrame, list[str]]:
    """The table as a Polars frame and the names of its pandas index columns (if written by pandas).

    Parquet is read by Polars: a betadata file is a few rows x ~1,000 columns, where pyarrow's
    dataset reader spends ~80 ms per file on per-column work and Polars ~12 ms; the pandas index
    names (schema metadata, which Polars drops) are read only when there is no Cluster/CellID column."""
    if p.suffix == ".parquet":
        df = pl.read_parquet(p)
        if CLUSTER in df.columns or CELL_ID in df.columns:
            return df, []
        import pyarrow.parquet as pq

        return df, _pandas_index(pq.read_schema(p).metadata)
    if p.suffix == ".feather":
        import pyarrow.feather as feather

        tbl = feather.read_table(p)
        return cast(pl.DataFrame, pl.from_arrow(tbl)), _pandas_index(tbl.schema.metadata)
    if p.suffix == ".csv":
        return pl.read_csv(p), []
    raise InputError("unknown betadata format", path=p)


def read_betadata(path: str | os.PathLike, gene: str | None = None) -> BetaData:
    """Read one betadata file (parquet, feather or csv; Rust, Python-reference or polgen layout)."""
    p = Path(path)
    if not p.exists():
        raise InputError("betadata file not found", path=p)
    gene = gene or gene_from_path(p)
    try:
        df, index_cols = _read_frame(p)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable file -> typed error
        raise InputError(f"cannot read betadata ({type(exc).__name__}: {exc})", path=p) from None
    names = df.columns
    schema = df.schema
    if CLUSTER in names:
        id_col, kind = CLUSTER, CLUSTER
    elif CELL_ID in names:
        id_col, kind = CELL_ID, CELL_ID
    elif index_cols and index_cols[0] in names:
        id_col, kind = index_cols[0], CELL_ID
    elif names and not names[0].startswith("beta") and not schema[names[0]].is_float():
        id_col, kind = names[0], CELL_ID
    else:
        raise SchemaError("betadata has no Cluster/CellID column or index", path=p)
    beta_cols = [c for c in names if c == BETA0 or c.startswith(PREFIX)]
    if not beta_cols:
        # the Rust port also reads columns without the beta_ prefix: everything numeric but the id
        raw = [
            c for c in names if c != id_col and c not in index_cols and (schema[c].is_float() or schema[c].is_integer())
        ]
        if not raw:
            raise SchemaError("betadata has no beta columns", path=p)
        cols_out = [(BETA0 if c in ("intercept", BETA0) else PREFIX + c) for c in raw]
        beta_cols, out_names = raw, cols_out
    else:
        out_names = beta_cols
    ids = [_norm_label(v) for v in df[id_col].to_list()]
    if len(set(ids)) != len(ids):
        raise SchemaError(f"betadata {id_col} values are not unique", path=p, column=id_col)
    block = df.select(beta_cols)
    nulls = block.null_count().row(0)
    for c, k in zip(beta_cols, nulls):
        if k:
            raise InputError("betadata column holds nulls", path=p, column=c)
    for c in beta_cols:
        if not (schema[c].is_numeric() or schema[c] == pl.Boolean):
            raise InputError(f"betadata column has type {schema[c]}, expected numbers", path=p, column=c)
    vals = np.ascontiguousarray(block.cast(pl.Float64).to_numpy(), dtype=np.float64)
    if vals.ndim != 2:  # no rows
        vals = vals.reshape(df.height, len(beta_cols))
    return BetaData(gene=gene, id_kind=kind, ids=ids, columns=list(out_names), values=vals, path=str(p))


def write_betadata(bd: BetaData, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``bd`` atomically as parquet (``.parquet``) or feather (``.feather``)."""
    p = Path(path)
    tbl = bd.to_polars().to_arrow()
    if p.suffix == ".parquet":
        write_table_atomic(p, tbl, dict(metadata or {}))
    elif p.suffix == ".feather":
        import pyarrow.feather as feather

        if metadata:
            tbl = tbl.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        try:
            feather.write_feather(tbl, tmp, compression="zstd")
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    else:
        raise InputError("betadata must be written as .parquet or .feather", path=p)
    return p


class Betabase:
    """All genes' betadata; ``table`` is one long Arrow-backed table (gene, row id, term, beta)."""

    def __init__(self, frames: Iterable[BetaData]) -> None:
        self.data: dict[str, BetaData] = {}
        for bd in frames:
            if bd.gene in self.data:
                raise InputError(f"two betadata for gene {bd.gene!r}", path=bd.path)
            self.data[bd.gene] = bd

    @classmethod
    def from_dir(cls, folder: str | os.PathLike, genes: Sequence[str] | None = None) -> Betabase:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError("betadata folder not found", path=folder)
        paths: dict[str, str] = {}
        for suf in SUFFIXES:  # parquet wins over feather over csv for the same gene
            for f in sorted(glob.glob(str(folder / f"*{suf}"))):
                paths.setdefault(gene_from_path(f), f)
        if genes is not None:
            want = set(genes)
            paths = {g: f for g, f in paths.items() if g in want}
        if not paths:
            raise InputError("no *_betadata.{parquet,feather,csv} files found", path=folder)
        return cls(read_betadata(f, g) for g, f in sorted(paths.items()))

    @classmethod
    def coerce(cls, betas) -> Betabase:
        if isinstance(betas, Betabase):
            return betas
        if isinstance(betas, BetaData):
            return cls([betas])
        if isinstance(betas, (str, os.PathLike)):
            p = Path(betas)
            return cls.from_dir(p) if p.is_dir() else cls([read_betadata(p)])
        if isinstance(betas, Mapping):
            return cls(v if isinstance(v, BetaData) else betadata_from_frame(k, v) for k, v in betas.items())
        if isinstance(betas, (list, tuple)):
            return cls(b if isinstance(b, BetaData) else read_betadata(b) for b in betas)
        raise InputError(
            f"cannot use {type(betas).__name__} as betadata (a folder, file, Betabase or {{gene: frame}} mapping)"
        )

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, gene: str) -> BetaData:
        return self.data[gene]

    def __contains__(self, gene: str) -> bool:
        return gene in self.data

    @property
    def genes(self) -> list[str]:
        return list(self.data)

    @property
    def table(self) -> pa.Table:
        """Long table: gene, id_kind, id, term, beta (one Arrow table for all genes)."""
        parts = []
        for g, bd in self.data.items():
            n, m = bd.values.shape
            parts.append(
                pa.table(
                    {
                        "gene": pa.array([g] * (n * m), pa.string()),
                        "id_kind": pa.array([bd.id_kind] * (n * m), pa.string()),
                        "id": pa.array(np.repeat(np.array(bd.ids, dtype=object), m).tolist(), pa.string()),
                        "term": pa.array(list(bd.columns) * n, pa.string()),
                        "beta": pa.array(bd.values.ravel()),
                    }
                )
            )
        return pa.concat_tables(parts) if parts else pa.table({"gene": pa.array([], pa.string())})

    def to_polars(self) -> pl.DataFrame:
        # an Arrow table converts to a DataFrame; pyarrow has no stubs, so mypy cannot pick that overload
        return cast(pl.DataFrame, pl.from_arrow(self.table))

    @property
    def ligands(self) -> set[str]:
        return {x for bd in self.data.values() for x in bd.ligands}

    @property
    def tfl_ligands(self) -> set[str]:
        return {x for bd in self.data.values() for x in bd.tfl_ligands}

    def check_genes(self, var_names: Sequence[str]) -> None:
        """Every modulator of every betadata must be a gene of the dataset (else InputError)."""
        known = set(var_names)
        for g, bd in self.data.items():
            missing = [m for m in bd.modulators if m not in known]
            if missing:
                raise InputError(
                    f"betadata of {g} uses {len(missing)} modulator gene(s) not in var_names: {missing[:10]}",
                    path=bd.path,
                )


def betadata_from_frame(gene: str, df) -> BetaData:
    """A :class:`BetaData` from a Polars/pandas frame in betadata layout."""
    try:
        import pandas as pd

        if isinstance(df, pd.DataFrame):
            df = df.reset_index() if df.index.name or not isinstance(df.index, pd.RangeIndex) else df
            df = pl.from_pandas(df)
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(df, pl.DataFrame):
        raise InputError(f"betadata of {gene} must be a DataFrame")
    names = df.columns
    if CLUSTER in names:
        idc, kind = CLUSTER, CLUSTER
    elif CELL_ID in names:
        idc, kind = CELL_ID, CELL_ID
    else:
        idc, kind = names[0], CELL_ID
    cols = [c for c in names if c == BETA0 or c.startswith(PREFIX)]
    return BetaData(
        gene=gene,
        id_kind=kind,
        ids=[_norm_label(v) for v in df[idc].to_list()],
        columns=cols,
        values=df.select(cols).to_numpy().astype(np.float64),
    )


def betabase_from_long(df) -> Betabase:
    """A :class:`Betabase` from its long table (``gene, id_kind, id, term, beta``; see ``Betabase.table``)."""
    if isinstance(df, pl.LazyFrame):
        df = df.collect()
    if isinstance(df, pa.Table):
        df = pl.from_arrow(df)
    need = {"gene", "id", "term", "beta"}
    if not need <= set(df.columns):
        raise SchemaError(f"a long betadata table needs columns {sorted(need)}")
    frames = []
    for (gene,), part in df.group_by("gene", maintain_order=True):
        kind = part["id_kind"][0] if "id_kind" in part.columns else CLUSTER
        wide = part.pivot(on="term", index="id", values="beta", aggregate_function=None, maintain_order=True)
        terms = list(dict.fromkeys(part["term"].to_list()))
        frames.append(
            BetaData(
                gene=str(gene),
                id_kind=str(kind),
                ids=[str(v) for v in wide["id"].to_list()],
                columns=terms,
                values=wide.select(terms).to_numpy().astype(np.float64),
            )
        )
    return Betabase(frames)


def top_regulators(betas, n: int = 10) -> pl.DataFrame:
    """The ``n`` terms of each gene's models with the largest mean |beta| over its rows (clusters or
    cells), all-zero terms left out.

    ``betas``: anything :meth:`Betabase.coerce` takes (a run folder, files, a Betabase).  Returns
    ``gene, term, kind, mean_abs_beta, max_abs_beta, rank`` (kind ``tf`` / ``lr`` (ligand$receptor) /
    ``tfl`` (ligand#TF); rank 1 = largest), sorted by gene then rank (ties by term).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be a whole number >= 1, got {n!r}")
    base = Betabase.coerce(betas)
    rows = []
    for g in base.genes:
        bd = base[g]
        for kind, cols in (("tf", bd.tf_cols), ("lr", bd.lr_cols), ("tfl", bd.tfl_cols)):
            for c in cols:
                a = np.abs(bd.values[:, int(c)])
                if a.any():
                    rows.append((g, bd.columns[int(c)][len(PREFIX) :], kind, float(a.mean()), float(a.max())))
    schema = {
        "gene": pl.String,
        "term": pl.String,
        "kind": pl.String,
        "mean_abs_beta": pl.Float64,
        "max_abs_beta": pl.Float64,
    }
    df = pl.DataFrame(rows, schema=schema, orient="row")
    return (
        df.sort(["gene", "mean_abs_beta", "term"], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("gene").alias("rank"))
        .filter(pl.col("rank") <= n)
    )
