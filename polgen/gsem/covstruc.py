"""The covariance structure that LDSC produces and every Genomic SEM model consumes.

``CovStruc`` holds GenomicSEM's ``S`` (genetic covariance), ``V`` (sampling covariance of
``vech(S)``, lower triangle stacked column by column), ``I`` (LDSC intercepts), ``N`` (sample
sizes of the regressions, in vech order) and ``m`` (number of SNPs in the LD scores), plus the
standardised ``S_Stand`` / ``V_Stand`` when ``ldsc(stand=True)`` made them.  Users who ran LDSC in
R can bring its output as a plain mapping (``{"S": ..., "V": ..., "I": ..., "trait_names": ...}``),
for example a JSON file written with ``jsonlite::write_json(LDSCoutput)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polgen.errors import InputError, SchemaError
from polgen.io.sink import write_bytes_atomic

_ALIASES = {
    "S": ("S", "s"),
    "V": ("V", "v"),
    "I": ("I", "i"),
    "N": ("N", "n"),
    "m": ("m", "M"),
    "trait_names": ("trait_names", "trait.names", "traits", "names"),
    "S_Stand": ("S_Stand", "S_stand", "s_stand"),
    "V_Stand": ("V_Stand", "V_stand", "v_stand"),
}


def _square(name: str, value: Any, k: int | None = None) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise InputError(f"covstruc {name} must be a square matrix, got shape {arr.shape}", column=name)
    if k is not None and arr.shape[0] != k:
        raise InputError(f"covstruc {name} is {arr.shape[0]}x{arr.shape[0]}, expected {k}x{k}", column=name)
    return np.ascontiguousarray(arr)


@dataclass
class CovStruc:
    """Genetic covariance structure: S, V, I (+ N, m, standardised S/V) with trait names."""

    S: np.ndarray
    V: np.ndarray
    I: np.ndarray
    trait_names: list[str]
    N: np.ndarray | None = None
    m: float | None = None
    S_Stand: np.ndarray | None = None
    V_Stand: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.S = _square("S", self.S)
        k = self.S.shape[0]
        kstar = k * (k + 1) // 2
        self.V = _square("V", self.V, kstar)
        self.I = _square("I", self.I, k) if self.I is not None else np.eye(k)
        if self.S_Stand is not None:
            self.S_Stand = _square("S_Stand", self.S_Stand, k)
        if self.V_Stand is not None:
            self.V_Stand = _square("V_Stand", self.V_Stand, kstar)
        if self.N is not None:
            self.N = np.asarray(self.N, dtype=np.float64).reshape(-1)
        names = [str(t) for t in (self.trait_names or [f"V{i + 1}" for i in range(k)])]
        if len(names) != k:
            raise InputError(f"covstruc has {k} traits but {len(names)} trait names", column="trait_names")
        if len(set(names)) != k:
            raise InputError("covstruc trait names are not unique", column="trait_names")
        self.trait_names = names
        for name in ("S", "V", "I"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise InputError(f"covstruc {name} has NaN or infinite entries", column=name)

    @property
    def k(self) -> int:
        return self.S.shape[0]

    # -- coercion and serialisation ------------------------------------------------------
    @classmethod
    def from_mapping(cls, obj: Mapping[str, Any]) -> CovStruc:
        vals: dict[str, Any] = {}
        for key, names in _ALIASES.items():
            for nm in names:
                if nm in obj:
                    vals[key] = obj[nm]
                    break
        missing = [k for k in ("S", "V") if k not in vals]
        if missing:
            raise SchemaError(f"covstruc lacks {', '.join(missing)}; found keys {sorted(obj)}")
        m = vals.get("m")
        if isinstance(m, (list, tuple, np.ndarray)):
            m = float(np.asarray(m).reshape(-1)[0])
        return cls(
            S=vals["S"],
            V=vals["V"],
            I=vals.get("I"),  # type: ignore[arg-type]  # I absent: None, which __post_init__ makes the identity
            trait_names=vals.get("trait_names") or [],
            N=vals.get("N"),
            m=m,
            S_Stand=vals.get("S_Stand"),
            V_Stand=vals.get("V_Stand"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "S": self.S.tolist(),
            "V": self.V.tolist(),
            "I": self.I.tolist(),
            "trait_names": list(self.trait_names),
        }
        if self.N is not None:
            out["N"] = self.N.tolist()
        if self.m is not None:
            out["m"] = float(self.m)
        if self.S_Stand is not None:
            out["S_Stand"] = self.S_Stand.tolist()
        if self.V_Stand is not None:
            out["V_Stand"] = self.V_Stand.tolist()
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (``.json``) or parquet (anything else); atomic."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            data = json.dumps(self.to_dict()).encode()
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            tbl = pa.table({"trait": self.trait_names})
            tbl = tbl.replace_schema_metadata({b"polgen.covstruc": json.dumps(self.to_dict()).encode()})
            buf = pa.BufferOutputStream()
            pq.write_table(tbl, buf)
            data = buf.getvalue().to_pybytes()
        write_bytes_atomic(path, data)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CovStruc:
        path = Path(path)
        if not path.exists():
            raise InputError("covstruc file not found", path=path)
        try:
            if path.suffix.lower() == ".json":
                obj = json.loads(path.read_text())
            else:
                import pyarrow.parquet as pq

                md = pq.read_schema(path).metadata or {}
                if b"polgen.covstruc" not in md:
                    raise InputError("parquet file holds no polgen covstruc", path=path)
                obj = json.loads(md[b"polgen.covstruc"])
        except (json.JSONDecodeError, OSError) as exc:
            raise InputError(f"cannot read covstruc: {exc}", path=path) from exc
        try:
            return cls.from_mapping(obj)
        except InputError as exc:
            exc.path = str(path)
            raise


def as_covstruc(obj: Any, trait_names: Sequence[str] | None = None) -> CovStruc:
    """Accept a :class:`CovStruc`, anything with ``S``/``V``/``I`` attributes, a mapping, or a path."""
    if isinstance(obj, CovStruc):
        cs = obj
    elif isinstance(obj, (str, os.PathLike)):
        cs = CovStruc.load(obj)
    elif isinstance(obj, Mapping):
        cs = CovStruc.from_mapping(obj)
    elif hasattr(obj, "S") and hasattr(obj, "V"):
        cs = CovStruc.from_mapping({k: getattr(obj, k) for k in dir(obj) if not k.startswith("_")})
    else:
        raise InputError(
            f"cannot use {type(obj).__name__} as a covariance structure; pass the "
            "object ldsc() returns or a mapping with S, V, I and trait_names"
        )
    if trait_names is not None:
        if len(trait_names) != cs.k:
            raise InputError(f"{len(trait_names)} trait names for a {cs.k}-trait covstruc")
        cs.trait_names = [str(t) for t in trait_names]
    return cs
