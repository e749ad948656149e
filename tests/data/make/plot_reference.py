"""Produce the reference images of tests/plot/test_plot_reference_images.py (tests/data/plot/).

    python tests/data/make/plot_reference.py [--out DIR] [--measure]

Draws a Manhattan plot, a QQ plot, a scree plot and a spatial map of small seeded synthetic data
with polgen.plot, on fixed canvases (size and dpi), with matplotlib's default rc settings plus
:data:`RC` (DejaVu Sans, which matplotlib ships; no hinting), rendered by the Agg canvas, and writes
one PNG each and PROVENANCE.md.  Run it again when matplotlib (or a picture's design) changes the
rendering on purpose, and commit the new PNGs with the new PROVENANCE.md.

``--measure`` writes nothing: it prints the RMS differences the test's tolerance is chosen between
(a second rendering; the same pictures with their text antialiased otherwise, as another freetype
build gives; the deliberately different pictures of :func:`draw` ``variant="perturbed"``).

The test imports :func:`render` from this file, so the stored and the fresh pictures come from the
same code.
"""

from __future__ import annotations

import argparse
import datetime
import io
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OUT = ROOT / "tests" / "data" / "plot"

#: the pictures, in the order they are written
PICTURES = ("manhattan", "qq", "scree", "spatial")

#: rc settings on top of matplotlib's defaults (``rcdefaults``), for every picture
RC: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "mathtext.fontset": "dejavusans",
    "text.hinting": "none",
    "axes.unicode_minus": True,
    "savefig.facecolor": "white",
    "savefig.bbox": None,
    "savefig.pad_inches": 0.1,
    "path.simplify": True,
}

#: what another freetype build can change in a picture whose content is the same, for --measure:
#: the glyphs' antialiasing coverage c of every text pixel as c**g (g < 1: darker edges, the size of
#: a gamma or stem-darkening difference); and, as a bound no build reaches, text not antialiased
TEXT_GAMMAS = (0.7, 0.5)
NO_TEXT_AA = {"text.antialiased": False}


def gwas_frame(seed: int = 15, n: int = 3000) -> pl.DataFrame:
    """A per-SNP table on chromosomes 1, 2, 3, X: uniform P values plus two peaks."""
    rng = np.random.default_rng(seed)
    chrom = rng.choice(np.array(["1", "2", "3", "X"]), n, p=[0.35, 0.3, 0.2, 0.15])
    bp = rng.integers(1, 20_000_000, n)
    p = rng.uniform(size=n)
    for c, centre, k in (("2", 8_000_000, 12), ("3", 15_000_000, 6)):
        idx = np.flatnonzero(chrom == c)[:k]
        bp[idx] = centre + rng.integers(-200_000, 200_000, k)
        p[idx] = 10.0 ** -rng.uniform(5, 14, k)
    return pl.DataFrame({"CHR": chrom, "BP": bp, "SNP": [f"rs{i}" for i in range(n)], "P": p})


def eigen_frame() -> pl.DataFrame:
    """A parallel analysis layout: observed and simulated eigenvalues by component."""
    return pl.DataFrame(
        {
            "component": list(range(1, 9)),
            "observed": [5.2, 2.4, 1.3, 0.62, 0.48, 0.41, 0.35, 0.30],
            "simulated": [1.35, 1.2, 1.08, 0.98, 0.90, 0.82, 0.75, 0.69],
        }
    )


def cell_frame(seed: int = 15, n: int = 250) -> tuple[pl.DataFrame, np.ndarray]:
    """Cells on a 100 x 100 tissue and a smooth value on them (a bump minus a gradient, plus noise)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 100, n)
    y = rng.uniform(0, 100, n)
    v = np.exp(-((x - 35) ** 2 + (y - 60) ** 2) / 600) - 0.006 * x + rng.normal(0, 0.05, n)
    return pl.DataFrame({"CellID": [f"c{i}" for i in range(n)], "x": x, "y": y}), v


def draw(name: str, variant: str = "reference") -> Any:
    """The matplotlib Figure of picture ``name``; ``variant="perturbed"`` a deliberately different
    one (another threshold line, other data, another suggested K, values shifted in space)."""
    from polgen.plot import Canvas, manhattan, qq, scree, spatial

    perturbed = variant == "perturbed"
    if variant not in ("reference", "perturbed"):
        raise ValueError(f"variant: reference or perturbed, not {variant!r}")
    if name == "manhattan":
        canvas = Canvas(width=6.0, height=2.5, dpi=80, left=0.1, right=0.98, bottom=0.18, top=0.88)
        thr = 1e-6 if perturbed else 5e-8  # the genome-wide line moves
        r = manhattan(gwas_frame(), threshold=thr, suggestive=1e-4, title="manhattan", canvas=canvas)
    elif name == "qq":
        canvas = Canvas(width=3.5, height=3.5, dpi=80, left=0.17, right=0.96, bottom=0.15, top=0.9)
        r = qq(gwas_frame(seed=16 if perturbed else 15), title="qq", canvas=canvas)  # other P values
    elif name == "scree":
        canvas = Canvas(width=4.0, height=3.0, dpi=80, left=0.14, right=0.97, bottom=0.16, top=0.9)
        r = scree(eigen_frame(), suggested_k=2 if perturbed else 3, title="scree", canvas=canvas)
    elif name == "spatial":
        canvas = Canvas(width=4.0, height=3.4, dpi=80, left=0.08, right=0.8, bottom=0.1, top=0.9)
        cells, v = cell_frame()
        if perturbed:  # the same values on other cells: the bump moves
            v = np.roll(v, 40)
        r = spatial(cells, v, center=0.0, title="spatial", canvas=canvas)
    else:
        raise ValueError(f"picture: one of {PICTURES}, not {name!r}")
    return r.figure


def render(name: str, variant: str = "reference", rc: Mapping[str, Any] | None = None, text: bool = True) -> bytes:
    """PNG bytes of picture ``name``: matplotlib's defaults + :data:`RC` (+ ``rc``), Agg canvas.

    The rc settings hold while the figure is drawn and saved, and are restored after, so neither
    other code's rc changes reach the picture nor this one's reach other code.  ``text=False``
    hides every text (for --measure: which pixels are text)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(RC)
        matplotlib.rcParams.update(rc or {})
        fig = draw(name, variant)
        FigureCanvasAgg(fig)  # Agg whatever the session's backend
        if not text:
            for t in fig.findobj(Text):
                t.set_visible(False)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=fig.dpi, metadata={"Software": None})
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(float)


def text_gamma(name: str, gamma: float) -> bytes:
    """Picture ``name`` with the antialiasing coverage of its text pixels raised to ``gamma``."""
    from PIL import Image

    ref, bare = _pixels(render(name)), _pixels(render(name, text=False))
    text = (ref != bare).any(axis=-1, keepdims=True)
    ink = np.where(ref < bare, 0.0, 255.0)  # dark text on a lighter background (or the reverse)
    cov = np.clip((ref - bare) / np.where(ink == bare, 1.0, ink - bare), 0.0, 1.0)
    new = np.where(text, bare + (ink - bare) * cov**gamma, ref)
    buf = io.BytesIO()
    Image.fromarray(np.rint(new).astype(np.uint8)).save(buf, format="png")
    return buf.getvalue()


def rms(expected: Path, actual: Path) -> float:
    """RMS of the pixel difference (matplotlib.testing.compare, 0-255 scale)."""
    from matplotlib.testing.compare import compare_images

    r = compare_images(str(expected), str(actual), tol=0, in_decorator=True)
    return 0.0 if r is None else float(r["rms"])


def measure() -> dict[str, dict[str, float]]:
    """RMS of each picture against its rendering here: drawn again, its text antialiased otherwise
    (:data:`TEXT_GAMMAS`, :data:`NO_TEXT_AA`), and its perturbed variant."""
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name in PICTURES:
            ref = d / f"{name}.png"
            ref.write_bytes(render(name))
            cases = {"again": render(name)}
            cases.update({f"text-coverage^{g}": text_gamma(name, g) for g in TEXT_GAMMAS})
            cases["text-not-antialiased"] = render(name, rc=NO_TEXT_AA)
            cases["perturbed"] = render(name, "perturbed")
            row = {}
            for label, data in cases.items():
                f = d / f"{name}-{label.replace('^', '-')}.png"
                f.write_bytes(data)
                row[label] = rms(ref, f)
            out[name] = row
    return out


def _git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(sizes: dict[str, int]) -> str:
    import matplotlib
    from matplotlib import ft2font

    import polgen

    rows = "\n".join(f"| `{n}.png` | {DESCRIBE[n]} | {sizes[n]:,} |" for n in PICTURES)
    rc = ", ".join(f"`{k}={v!r}`" for k, v in RC.items())
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    return f"""# tests/data/plot — provenance

Reference images of `tests/plot/test_plot_reference_images.py`, which draws the same pictures again
and compares them with `matplotlib.testing.compare.compare_images` within a tolerance.

Produced by `python tests/data/make/plot_reference.py` (the test imports its drawing code).  Each is
a polgen.plot picture of small seeded synthetic data on a fixed canvas (size and dpi in the
script), drawn with matplotlib's defaults (`rcdefaults`) plus {rc}, rendered by the Agg canvas.

| file | what | bytes |
| --- | --- | --- |
{rows}

Made with matplotlib {matplotlib.__version__} (freetype {ft2font.__freetype_version__}), numpy
{np.__version__}, polars {pl.__version__}, polgen {getattr(polgen, "__version__", "?")} at commit
{_git_commit()}, Python {sys.version.split()[0]}, on {today}.

**When matplotlib changes its rendering** (a new version moves a tick, a font or the antialiasing
beyond the tolerance) or a picture's design changes on purpose: look at the new pictures, then run
`python tests/data/make/plot_reference.py` and commit the PNGs with this file.
`python tests/data/make/plot_reference.py --measure` prints the RMS differences the tolerance is
chosen between (see the test's module docstring).

Licence: synthetic data; distributed with polgen under GPL-3.0-or-later.
"""


DESCRIBE = {
    "manhattan": "`manhattan` of `gwas_frame()` (3,000 SNPs on 1, 2, 3, X; two peaks), 480 x 200 px",
    "qq": "`qq` of the same P values, with lambda_GC and the 95% band, 280 x 280 px",
    "scree": "`scree` of observed and simulated eigenvalues (`eigen_frame()`), suggested K = 3, 320 x 240 px",
    "spatial": "`spatial` map of a value on 250 seeded cells (`cell_frame()`), centred at 0, 320 x 272 px",
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--measure", action="store_true", help="print RMS differences; write nothing")
    a = ap.parse_args(argv)
    if a.measure:
        for name, row in measure().items():
            print(name, "  ".join(f"{k}: {v:.3f}" for k, v in row.items()))
        return
    a.out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in PICTURES:
        data = render(name)
        (a.out / f"{name}.png").write_bytes(data)
        sizes[name] = len(data)
        print(f"wrote {a.out / f'{name}.png'} ({len(data):,} bytes)")
    (a.out / "PROVENANCE.md").write_text(provenance(sizes))
    print(f"wrote {a.out / 'PROVENANCE.md'}")


if __name__ == "__main__":
    main()
