"""HDL LD reference panels: per-piece eigen-decompositions of the LD matrix, read piece by piece.

Two layouts are read by :func:`open_hdl_panel`:

* **R** (HDL's ``LD.path``, also R GenomicSEM's ``hdl(LD.path=)``): a folder with one
  ``*snp_counter*`` and one ``*snp_list*`` R data file (``.RData`` or ``.rda``) and per piece an
  ``.rda`` and a ``.bim`` whose names hold ``chr{c}.{p}`` followed by ``_`` or ``.``.  Read as HDL
  1.4's ``HDL.rg`` reads them, which covers the three layouts its documentation and code describe:

  - UK Biobank array panel (``UKB_array_SVD_eigen90_extraction``): ``UKB_snp_counter_array.RData``
    (``nsnps.list``: an unnamed list, element ``c`` the SNP counts of chromosome ``c``'s pieces),
    ``UKB_snp_list_array.RData`` (``snps.name.list``), ``ukb_chr{c}.{p}_n336000_500banded_99eigen.rda``
    and ``ukb_chr{c}.{p}_n336000.bim``;
  - UK Biobank imputed panel (``UKB_imputed_SVD_eigen99_extraction``): ``UKB_snp_counter_imputed.RData``
    (``nsnps.list.imputed``), ``UKB_snp_list_imputed.vector_form.RData``
    (``snps.list.imputed.vector``); other files in the folder (its ``snp.dictionary.imputed.rda``)
    are ignored;
  - panels built with HDL's ``build_ld_ref`` pipeline: ``{name}_snp_counter_array.RData`` whose
    ``nsnps.list`` is *named* by chromosome (only the chromosomes built, e.g. ``"21"``, ``"22"``),
    ``{name}_snp_list_array.RData``, ``{name}_chr{c}.{p}_.banded.rda`` (``V`` with SNP row names,
    half the piece's eigenpairs) and space-separated ``{name}_chr{c}.{p}_.bim``.

  Each piece ``.rda`` holds ``LDsc`` (LD scores, one per SNP), ``lam`` (eigenvalues) and ``V``
  (eigenvectors, SNPs x eigenvalues); the ``.bim`` names the piece's SNPs and alleles (A2 in column
  6).  A named ``nsnps.list`` gives the chromosomes by name (as HDL; R GenomicSEM indexes it by
  position 1..22 and needs a ``UKB_snp_counter*`` file, so it reads the UK Biobank panels only);
  chromosome names must be numbers.  Like R GenomicSEM, every stored eigenpair is used (HDL's own
  ``HDL.rg`` may keep fewer, ``eigen.cut``).  Reading ``.rda`` needs the pure-Python ``rdata``
  package (``pip install 'polgen[hdl]'``).
* **polgen**: a folder with ``hdl_panel.json`` (format tag, pieces and their SNP counts),
  ``snps.parquet`` (``CHR PIECE SNP BP A1 A2 LDSC``, pieces in order), ``snp_list.parquet`` (R's
  panel SNP list) and one ``chr{c}.{p}.npz`` per piece (``lam``, ``V``).  Written by
  :func:`write_hdl_panel` / :func:`convert_hdl_panel`; no optional dependency to read.

R GenomicSEM matches piece files with ``grep("chr{c}.{p}.*rda")`` (which also matches piece 10, 11,
... of the same chromosome, so it stops on a panel with 10 or more pieces per chromosome); here, as in
HDL 1.4, a piece's number must end at ``_`` or ``.``.

Checked against real files: a panel built by HDL's own ``build_ld_ref`` pipeline
(tests/data/gsem/hdl_build_ld_ref).  Not checked (the UK Biobank panels, 7.5 and 31 GB, are not
available here): the piece file names of the imputed panel (any name holding ``chr{c}.{p}_`` or
``chr{c}.{p}.`` is read), whether its folder holds more than one ``*snp_list*`` file (then this
reader stops and names them), and the R types inside the UK Biobank ``.rda`` files beyond what
R GenomicSEM's and HDL's code use (``LDsc``, ``lam``, ``V`` as numeric vectors / matrix, with or
without row names).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from polgen.errors import InputError, MissingExtraError, OutputExistsError, SchemaError

log = logging.getLogger("polgen")

__all__ = ["HDLPanel", "HDLPiece", "convert_hdl_panel", "open_hdl_panel", "write_hdl_panel"]

MANIFEST = "hdl_panel.json"
FORMAT = "polgen-hdl-panel"


class HDLPiece(NamedTuple):
    """One LD piece: its SNPs (with the reference A2 allele), LD scores and kept eigenpairs."""

    chrom: int
    piece: int
    snps: np.ndarray  # str, M
    a2: np.ndarray  # str, M
    ldsc: np.ndarray  # float64, M
    lam: np.ndarray  # float64, k
    V: np.ndarray  # float64, M x k


def _rdata():
    try:
        import rdata
    except ImportError as exc:
        raise MissingExtraError(
            "reading an R HDL panel (.rda/.RData) needs the optional 'rdata' package: "
            "pip install 'polgen[hdl]' (or convert the panel once with `polgen gsem hdl-panel --convert`)",
            extra="hdl",
        ) from exc
    return rdata


def _read_r(path: Path) -> dict[str, Any]:
    rdata = _rdata()
    try:
        return dict(rdata.read_rda(str(path)))
    except Exception as exc:  # rdata raises plain exceptions of several kinds on a bad file
        raise InputError(f"cannot read R data file: {exc}", path=path) from exc


def _pick(objs: dict[str, Any], names: tuple[str, ...], path: Path) -> Any:
    for nm in names:
        if nm in objs:
            return objs[nm]
    raise SchemaError(f"R data file holds none of {', '.join(names)} (it holds {sorted(objs)})", path=path)


def _only(folder: Path, pattern: str, what: str) -> Path:
    rx = re.compile(pattern)
    hits = sorted(p for p in folder.iterdir() if rx.search(p.name))
    if not hits:
        raise InputError(f"HDL panel folder has no {what} (a file matching {pattern!r})", path=folder)
    if len(hits) > 1:
        raise InputError(f"HDL panel folder has several {what} files: {[h.name for h in hits]}", path=folder)
    return hits[0]


@dataclass
class HDLPanel:
    """An opened HDL LD reference panel; pieces are read one at a time by :meth:`read_piece`."""

    path: Path
    fmt: str  # "r" | "polgen"
    pieces: list[tuple[int, int]]
    counts: np.ndarray  # SNPs per piece (R's nsnps.list, unlisted)
    snp_list: np.ndarray  # every panel SNP (R's snps.name.list)
    _files: dict[tuple[int, int], tuple[Path, Path]] | None = None
    _snps: pl.DataFrame | None = None

    @property
    def n_pieces(self) -> int:
        return len(self.pieces)

    @property
    def m_ref(self) -> float:
        """Total SNP count of the panel (R's ``M.ref = sum(unlist(nsnps.list))``)."""
        return float(self.counts.sum())

    def __iter__(self) -> Iterator[HDLPiece]:
        for i in range(self.n_pieces):
            yield self.read_piece(i)

    def read_piece(self, i: int) -> HDLPiece:
        chrom, piece = self.pieces[i]
        if self.fmt == "polgen":
            return self._read_native(chrom, piece)
        return self._read_rda(chrom, piece)

    # -- polgen layout -----------------------------------------------------------------------
    def _read_native(self, chrom: int, piece: int) -> HDLPiece:
        assert self._snps is not None
        f = self.path / f"chr{chrom}.{piece}.npz"
        if not f.exists():
            raise InputError(f"HDL panel piece chr{chrom}.{piece} is missing", path=f)
        try:
            with np.load(f) as z:
                lam = np.ascontiguousarray(z["lam"], dtype=np.float64)
                V = np.ascontiguousarray(z["V"], dtype=np.float64)
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"cannot read HDL panel piece (needs arrays lam, V): {exc}", path=f) from exc
        rows = self._snps.filter((pl.col("CHR") == chrom) & (pl.col("PIECE") == piece))
        return self._checked(
            chrom, piece, rows["SNP"].to_numpy(), rows["A2"].to_numpy(), rows["LDSC"].to_numpy(), lam, V, f
        )

    # -- R layout ----------------------------------------------------------------------------
    def _read_rda(self, chrom: int, piece: int) -> HDLPiece:
        assert self._files is not None
        rda, bim = self._files[(chrom, piece)]
        objs = _read_r(rda)
        ldsc = np.asarray(_pick(objs, ("LDsc",), rda), dtype=np.float64).reshape(-1)
        lam = np.asarray(_pick(objs, ("lam",), rda), dtype=np.float64).reshape(-1)
        V = np.asarray(_pick(objs, ("V",), rda), dtype=np.float64)
        if V.ndim == 1:
            V = V.reshape(-1, 1)
        snps, a2 = _read_bim(bim)
        return self._checked(chrom, piece, snps, a2, ldsc, lam, np.ascontiguousarray(V), rda)

    def snp_table(self) -> pl.DataFrame:
        """Every piece's SNPs in panel order: ``piece`` (0-based piece index), ``row`` (position in the
        piece), ``SNP``, ``A2`` (for joining summary statistics once, not once per piece)."""
        if self.fmt == "polgen":
            assert self._snps is not None
            key = pl.DataFrame(
                {"CHR": [c for c, _ in self.pieces], "PIECE": [p for _, p in self.pieces]},
                schema={"CHR": self._snps.schema["CHR"], "PIECE": self._snps.schema["PIECE"]},
            ).with_row_index("piece")
            tab = self._snps.select("CHR", "PIECE", "SNP", "A2").join(key, on=["CHR", "PIECE"], maintain_order="left")
        else:
            assert self._files is not None
            parts = []
            for i, cp in enumerate(self.pieces):
                snps, a2 = _read_bim(self._files[cp][1])
                parts.append(
                    pl.DataFrame({"SNP": snps.astype(str), "A2": a2.astype(str)}).with_columns(piece=pl.lit(i))
                )
            tab = pl.concat(parts)
        tab = tab.with_columns(
            pl.col("piece").cast(pl.Int64), pl.col("SNP").cast(pl.String), pl.col("A2").cast(pl.String)
        )
        return tab.with_columns(row=pl.int_range(pl.len()).over("piece")).select("piece", "row", "SNP", "A2")

    @staticmethod
    def _checked(chrom, piece, snps, a2, ldsc, lam, V, where) -> HDLPiece:
        m = ldsc.shape[0]
        if snps.shape[0] != m:
            raise SchemaError(f"piece chr{chrom}.{piece}: {snps.shape[0]} SNPs but {m} LD scores", path=where)
        if V.shape != (m, lam.shape[0]):
            raise SchemaError(
                f"piece chr{chrom}.{piece}: V is {V.shape[0]}x{V.shape[1]}, expected {m}x{lam.shape[0]} "
                "(SNPs x eigenvalues)",
                path=where,
            )
        if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(V)) and np.all(np.isfinite(ldsc))):
            raise SchemaError(f"piece chr{chrom}.{piece} has NaN or infinite LDsc/lam/V", path=where)
        return HDLPiece(chrom, piece, snps.astype(str), a2.astype(str), ldsc, lam, V)


def _read_bim(bim: Path) -> tuple[np.ndarray, np.ndarray]:
    """SNP ids (column 2) and A2 alleles (column 6) of a piece's .bim."""
    try:
        b = pl.read_csv(bim, separator="\t", has_header=False, infer_schema=False)
        if b.width == 1:  # R's read.table splits on any white space
            b = pl.read_csv(bim, separator=" ", has_header=False, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"cannot read HDL panel .bim: {exc}", path=bim) from exc
    if b.width < 6:
        raise SchemaError(f".bim file has {b.width} columns, expected 6 (chr id cm pos A1 A2)", path=bim)
    return b[:, 1].to_numpy(), b[:, 5].to_numpy()


def _chromosomes(nsnps: Any, counter: Path) -> list[tuple[int, Any]]:
    """(chromosome, per-piece counts) from R's ``nsnps.list``: by name when it is named (HDL's
    ``build_ld_ref`` panels: only the chromosomes built), else by position 1, 2, ... (the UKB panels)."""
    if isinstance(nsnps, dict):
        out = []
        for name, per in nsnps.items():
            label = str(name).strip()
            if not label.isdigit():
                raise SchemaError(
                    f"nsnps.list names chromosome {label!r}: polgen reads numbered chromosomes only", path=counter
                )
            out.append((int(label), per))
        return out
    if isinstance(nsnps, (list, tuple)):
        return list(enumerate(nsnps, start=1))
    # a bare vector: HDL indexes it as a list, so element c is chromosome c with a single piece
    return [(c, v) for c, v in enumerate(np.asarray(nsnps).reshape(-1).tolist(), start=1)]


def _open_r(folder: Path) -> HDLPanel:
    counter = _only(folder, r"(?i)snp_counter.*\.(rdata|rda)$", "SNP counter (*snp_counter*.RData)")
    listing = _only(folder, r"(?i)snp_list.*\.(rdata|rda)$", "SNP list (*snp_list*.RData)")
    cobj = _read_r(counter)
    nsnps = _pick(cobj, ("nsnps.list.imputed", "nsnps.list"), counter)
    lobj = _read_r(listing)
    snp_list = np.asarray(_pick(lobj, ("snps.list.imputed.vector", "snps.name.list"), listing)).astype(str).reshape(-1)
    pieces: list[tuple[int, int]] = []
    counts: list[float] = []
    for c, per in _chromosomes(nsnps, counter):
        vals = np.asarray(per, dtype=np.float64).reshape(-1)
        pieces += [(c, p) for p in range(1, vals.size + 1)]
        counts += vals.tolist()
    if len(set(pieces)) != len(pieces):
        raise SchemaError("nsnps.list names a chromosome twice", path=counter)
    rx = re.compile(r"chr(\d+)\.(\d+)[._].*\.(rda|bim)$")
    found: dict[tuple[int, int, str], list[str]] = {}
    for name in sorted(p.name for p in folder.iterdir()):
        hit = rx.search(name)
        if hit:
            found.setdefault((int(hit[1]), int(hit[2]), hit[3]), []).append(name)
    files: dict[tuple[int, int], tuple[Path, Path]] = {}
    for c, p in pieces:
        pair = []
        for ext in ("rda", "bim"):
            names = found.get((c, p, ext))
            if not names:
                raise InputError(
                    f"HDL panel piece chr{c}.{p} is missing: no file matching 'chr{c}.{p}_*.{ext}' "
                    f"({counter.name} lists {len(pieces)} pieces)",
                    path=folder,
                )
            pair.append(folder / names[0])
        files[(c, p)] = (pair[0], pair[1])
    return HDLPanel(folder, "r", pieces, np.asarray(counts), snp_list, _files=files)


def _open_native(folder: Path) -> HDLPanel:
    man = folder / MANIFEST
    try:
        meta = json.loads(man.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read HDL panel manifest: {exc}", path=man) from exc
    if meta.get("format") != FORMAT:
        raise SchemaError(f"not a polgen HDL panel manifest (format {meta.get('format')!r})", path=man)
    pieces = [(int(p["chr"]), int(p["piece"])) for p in meta["pieces"]]
    counts = np.asarray([float(p["n_snps"]) for p in meta["pieces"]])
    for fname in ("snps.parquet", "snp_list.parquet"):
        if not (folder / fname).exists():
            raise InputError(f"HDL panel file {fname} is missing", path=folder / fname)
    snps = pl.read_parquet(folder / "snps.parquet")
    miss = [c for c in ("CHR", "PIECE", "SNP", "A2", "LDSC") if c not in snps.columns]
    if miss:
        raise SchemaError(f"HDL panel SNP table lacks {miss}", path=folder / "snps.parquet", column=miss[0])
    snp_list = pl.read_parquet(folder / "snp_list.parquet")["SNP"].to_numpy().astype(str)
    for c, p in pieces:
        if not (folder / f"chr{c}.{p}.npz").exists():
            raise InputError(f"HDL panel piece chr{c}.{p} is missing", path=folder / f"chr{c}.{p}.npz")
    return HDLPanel(folder, "polgen", pieces, counts, snp_list, _snps=snps)


def open_hdl_panel(path: str | os.PathLike | HDLPanel) -> HDLPanel:
    """Open an HDL LD reference panel folder (R's ``LD.path`` layout or polgen's), checking that
    every piece it lists is present.

    Parameters
    ----------
    path
        The panel folder (or an already opened :class:`HDLPanel`, returned as is).

    Returns
    -------
    HDLPanel
        Pieces in R's order (chromosome 1..22, piece 1..k), per-piece SNP counts and the SNP list.
    """
    if isinstance(path, HDLPanel):
        return path
    folder = Path(path)
    if not folder.is_dir():
        raise InputError("HDL LD panel folder not found", path=folder)
    if (folder / MANIFEST).exists():
        return _open_native(folder)
    return _open_r(folder)


def write_hdl_panel(
    out: str | os.PathLike,
    pieces: Iterable[HDLPiece],
    snp_list: Iterable[str] | None = None,
    *,
    positions: Iterable[np.ndarray] | None = None,
    a1: Iterable[np.ndarray] | None = None,
    counts: Iterable[float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write pieces as a polgen-layout panel folder (built in a temp folder, renamed into place).

    Parameters
    ----------
    out
        Folder to create.
    pieces
        The panel's pieces in order.
    snp_list
        R's panel SNP list; default every piece SNP.
    positions, a1
        Optional per-piece BP and A1 arrays for ``snps.parquet`` (default 0 / empty).
    counts
        Per-piece SNP counts of the panel (R's ``nsnps.list``, whose sum is the genome-wide M of the
        jackknife fit); default each piece's number of SNPs.
    overwrite
        Replace an existing folder.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError("HDL panel folder exists (pass overwrite=True)", path=out)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        pos_it = iter(positions) if positions is not None else None
        a1_it = iter(a1) if a1 is not None else None
        cnt_it = iter(counts) if counts is not None else None
        frames, meta = [], []
        for pc in pieces:
            m = pc.ldsc.shape[0]
            np.savez(tmp / f"chr{pc.chrom}.{pc.piece}.npz", lam=pc.lam, V=pc.V)
            frames.append(
                pl.DataFrame(
                    {
                        "CHR": np.full(m, pc.chrom, dtype=np.int32),
                        "PIECE": np.full(m, pc.piece, dtype=np.int32),
                        "SNP": pc.snps.astype(str),
                        "BP": next(pos_it) if pos_it is not None else np.zeros(m, dtype=np.int64),
                        "A1": next(a1_it).astype(str) if a1_it is not None else np.full(m, "", dtype=object),
                        "A2": pc.a2.astype(str),
                        "LDSC": pc.ldsc,
                    }
                )
            )
            n_snps = float(next(cnt_it)) if cnt_it is not None else m
            meta.append({"chr": pc.chrom, "piece": pc.piece, "n_snps": n_snps, "n_eigen": int(pc.lam.shape[0])})
        snps = pl.concat(frames)
        snps.write_parquet(tmp / "snps.parquet")
        lst = snps["SNP"] if snp_list is None else pl.Series("SNP", [str(s) for s in snp_list])
        pl.DataFrame({"SNP": lst}).write_parquet(tmp / "snp_list.parquet")
        (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "version": 1, "pieces": meta}, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote HDL panel with %d pieces to %s", len(meta), out)
    return out


def convert_hdl_panel(src: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Convert an R-layout HDL panel folder (``.rda`` / ``.RData`` / ``.bim``) into polgen's layout,
    which then reads without the ``rdata`` package.  Counts of the R counter file are kept."""
    panel = open_hdl_panel(src)
    if panel.fmt != "r":
        raise InputError("HDL panel is already in polgen's layout", path=panel.path)
    for i, pc in enumerate(panel):
        if pc.ldsc.shape[0] != panel.counts[i]:
            log.warning(
                "HDL panel piece chr%d.%d: %d SNPs, the counter file says %d", pc.chrom, pc.piece,
                pc.ldsc.shape[0], int(panel.counts[i]),
            )  # fmt: skip
    return write_hdl_panel(out, iter(panel), panel.snp_list, counts=panel.counts.tolist(), overwrite=overwrite)
