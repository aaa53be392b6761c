"""What the report is made from: the files a run wrote (metrics per head, folds, genes, feature-store
attributes, Snakemake benchmarks), the installed package versions and the published numbers."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genedml import __version__
from genedml.errors import InputError
from genedml.io.datasets import canonical

PACKAGES = [
    "torch",
    "timm",
    "snakemake",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "anndata",
    "scanpy",
    "zarr",
    "openslide-python",
    "openslide-bin",
    "tifffile",
    "matplotlib",
]
STAGE_ORDER = [
    "demo_data",
    "tile",
    "embed",
    "select_genes",
    "targets",
    "gene_semantics",
    "folds",
    "train",
    "evaluate",
    "thumbnail",
    "figures",
]
HEAD_TABLES = ("summary.tsv", "per_fold.tsv", "per_section.tsv", "per_gene.tsv", "gene_sets.json")


# --------------------------------------------------------------------------------------------------
# Datasets and the published numbers (shipped with the package)
# --------------------------------------------------------------------------------------------------


def dataset_name(name) -> str:
    """genedml's name of a dataset (her2st, stnet, cscc); a name it does not know (e.g. demo) stays as it is."""
    try:
        return canonical(name)
    except InputError:
        return str(name)


def load_published(as_printed: bool = False) -> pd.DataFrame:
    """Published cross-validation results (Gene-DML Tab. 1 with the supplementary MAE; DKAN Tab. 1).

    ``as_printed``: keep the numbers as the papers print them (strings), for display. The ``dataset``
    column keeps the papers' names (cSCC is ``skinst``); compare it through ``dataset_name``."""
    from importlib.resources import files

    with files("genedml").joinpath("data/published_results.csv").open("r") as fh:
        return pd.read_csv(fh, dtype=str if as_printed else None)


# --------------------------------------------------------------------------------------------------
# One head's results
# --------------------------------------------------------------------------------------------------


PROTOCOLS = ("honest", "reference")  # fold.json's ``protocol``: selected on inner validation / on the TEST fold


def selection_protocol(fold_facts: list[dict]) -> str:
    """The folds' ``selection`` strings (human-readable), joined; ``unknown`` without any."""
    values = sorted({str(f.get("selection", "unknown")) for f in fold_facts})
    return "; ".join(values) if values else "unknown"


def fold_protocol(fold_fact: dict) -> str:
    """``honest`` or ``reference`` from a fold.json record: its ``protocol`` field, or, in files written
    before that field existed, its ``selection`` string (``TEST fold (reference protocol, ...)`` is
    reference; inner validation and no selection at all are honest); ``unknown`` when neither says."""
    protocol = fold_fact.get("protocol")
    if protocol is not None:
        protocol = str(protocol).strip().lower()
        return protocol if protocol in PROTOCOLS else "unknown"
    selection = str(fold_fact.get("selection", ""))
    if "TEST" in selection or "reference protocol" in selection:
        return "reference"
    if "inner validation" in selection or selection.startswith("none"):
        return "honest"
    return "unknown"


def head_protocol(fold_facts: list[dict]) -> str:
    """One head's protocol over its folds: ``honest``, ``reference``, ``mixed`` (folds differ) or ``unknown``."""
    kinds = {fold_protocol(f) for f in fold_facts}
    if not kinds:
        return "unknown"
    return kinds.pop() if len(kinds) == 1 else "mixed"


@dataclass(frozen=True)
class MeanOver:
    """A mean (± std, ddof 0) and how many of the values it averages had one: folds, and the sections
    behind them (None where the run's tables do not say). Unpacks as ``mean, std``."""

    mean: float
    std: float
    n_folds: int
    n_folds_total: int
    n_sections: int | None = None
    n_sections_total: int | None = None

    def __iter__(self):
        return iter((self.mean, self.std))

    @property
    def missing(self) -> bool:
        """Some fold or section had no value, so the mean is over fewer than all of them."""
        return self.n_folds < self.n_folds_total or (
            self.n_sections is not None
            and self.n_sections_total is not None
            and self.n_sections < self.n_sections_total
        )


def _count(row: pd.DataFrame, col: str):
    return int(row[col].iloc[0]) if col in row and pd.notna(row[col].iloc[0]) else None


@dataclass
class HeadResults:
    name: str
    spec: dict
    summary: pd.DataFrame
    per_fold: pd.DataFrame
    per_section: pd.DataFrame
    per_gene: pd.DataFrame
    gene_sets: dict
    folds: list[dict]
    spatial: dict

    def metric(self, m: str, folds: list | None = None) -> MeanOver:
        """Mean and std (ddof 0) over folds, over the given folds only when ``folds`` is set, with the
        number of folds and sections that had a value. The std of a single fold is NaN (shown as the mean
        alone), not 0. A fold of ``folds`` absent from the per-fold table counts as missing."""
        pf = self.per_fold
        sections = self._section_counts(m, folds)
        if folds is not None:
            sel = pf[pf["fold"].isin(folds)] if "fold" in pf else pf.iloc[0:0]
            v = sel[m].to_numpy(dtype=float) if m in sel else np.array([])
            v = v[~np.isnan(v)]
            n_total = len(set(folds))
            if not v.size:
                return MeanOver(float("nan"), float("nan"), 0, n_total, *sections)
            return MeanOver(
                float(v.mean()), float(v.std()) if v.size > 1 else float("nan"), int(v.size), n_total, *sections
            )
        row = self.summary[self.summary["metric"] == m]
        if row.empty:
            n_total = len(pf) if m in pf else 0
            return MeanOver(float("nan"), float("nan"), 0, n_total, *sections)
        n = _count(row, "n_folds")
        n = 2 if n is None else n  # summaries without counts: show mean ± std
        n_total = _count(row, "n_folds_total")
        if n_total is None:  # written before the total was recorded: the per-fold table's rows
            n_total = max(n, len(pf)) if m in pf else n
        if "n_sections" in row and "n_sections_total" in row:
            sections = (_count(row, "n_sections"), _count(row, "n_sections_total"))
        mean, std = float(row["mean"].iloc[0]), float(row["std"].iloc[0])
        return MeanOver(mean, std if n > 1 else float("nan"), n, n_total, *sections)

    def _section_counts(self, m: str, folds: list | None) -> tuple:
        """(sections with a value of ``m``, sections), over the given folds; (None, None) when unknown."""
        ps = self.per_section
        if m not in ps or "fold" not in ps:
            return None, None
        sel = ps if folds is None else ps[ps["fold"].isin(folds)]
        return int(sel[m].notna().sum()), len(sel)

    @property
    def label(self) -> str:
        return self.spec.get("label", self.name)

    @property
    def heg_hvg(self) -> str | None:
        """How evaluate chose the HEG / HVG genes (gene_sets.json ``heg_hvg``: ``pooled`` or
        ``per_section``); files written before the field existed held per-section sets (a mapping)."""
        if "heg_hvg" in self.gene_sets:
            return str(self.gene_sets["heg_hvg"])
        if isinstance(self.gene_sets.get("HEG"), dict):
            return "per_section"
        return None

    @property
    def protocol(self) -> str:
        """The folds' ``selection`` strings, as fold.json words them."""
        return selection_protocol(self.folds)

    def fold_facts(self, folds: list | None = None) -> list[dict]:
        """The fold.json records, of the given folds only when ``folds`` is set."""
        if folds is None:
            return self.folds
        wanted = {int(f) for f in folds}
        return [f for f in self.folds if "fold" in f and int(f["fold"]) in wanted]

    def protocol_kind(self, folds: list | None = None) -> str:
        """``honest``, ``reference``, ``mixed`` or ``unknown`` (``head_protocol``), over the given folds."""
        return head_protocol(self.fold_facts(folds))


def load_head(results: Path, name: str, spec: dict) -> HeadResults:
    mdir = results / "metrics" / name
    missing = [p for p in HEAD_TABLES if not (mdir / p).exists()]
    if missing:
        raise FileNotFoundError(f"head {name!r}: {', '.join(missing)} missing in {mdir} (run `genedml evaluate` first)")
    folds = [json.loads(p.read_text()) for p in sorted((results / "heads" / name).glob("fold*/fold.json"))]
    spatial_json = results / "figures" / name / "spatial_pcc.json"
    return HeadResults(
        name=name,
        spec=spec,
        summary=pd.read_csv(mdir / "summary.tsv", sep="\t"),
        per_fold=pd.read_csv(mdir / "per_fold.tsv", sep="\t"),
        per_section=pd.read_csv(mdir / "per_section.tsv", sep="\t"),
        per_gene=pd.read_csv(mdir / "per_gene.tsv", sep="\t"),
        gene_sets=json.loads((mdir / "gene_sets.json").read_text()),
        folds=folds,
        spatial=json.loads(spatial_json.read_text()) if spatial_json.exists() else {},
    )


# --------------------------------------------------------------------------------------------------
# Facts of the run
# --------------------------------------------------------------------------------------------------


def fold_designs(folds: pd.DataFrame) -> dict:
    """design label -> its folds, when the fold table holds more than one design (else {})."""
    if "design" not in folds.columns:
        return {}
    per_fold = folds.groupby("fold")["design"].first().fillna("").astype(str)
    if per_fold.nunique() < 2:
        return {}
    return {d: sorted(int(f) for f in per_fold.index[per_fold == d]) for d in pd.unique(per_fold)}


def feature_facts(stores: list) -> dict:
    """Encoder facts from the feature stores' attributes; lists every checksum seen (there should be one)."""
    import zarr

    seen = [dict(zarr.open_group(str(store), mode="r").attrs) for store in stores]
    if not seen:
        return {}
    first = seen[0]
    sums = sorted({str(a.get("weights_sha256")) for a in seen})
    return {
        "encoder": first.get("encoder"),
        "embed_dim": first.get("embed_dim"),
        "weights_sha256": sums[0] if len(sums) == 1 else sums,
        "precision": first.get("precision"),
        "tile_spec": first.get("tile_spec"),
        "neighbour_mode": first.get("neighbour_mode"),
        "feature_stores": len(seen),
        "encoder_calls": int(sum(int(a.get("encoder_calls", 0)) for a in seen)),
        "embed_wall_s": round(float(sum(float(a.get("wall_s", 0.0)) for a in seen)), 1),
        "devices": sorted({str(a.get("device")) for a in seen}),
    }


# the geometry audit's columns: (key in the stores' geometry_audit attribute, the report's heading)
GEOMETRY_COLUMNS = (
    ("um_per_px", "µm/px"),
    ("um_per_px_source", "from"),
    ("technology", "technology"),
    ("spot_diameter_um", "spot Ø µm"),
    ("spot_pitch_um", "pitch µm"),
    ("crop_um", "crop µm"),
    ("neighbourhood_um", "neighbourhood µm"),
    ("spot_share_of_crop", "spot / crop area"),
    ("spots", "spots used"),
    ("left_out_outside_tissue", "left out: outside tissue"),
    ("neighbour_tiles_in_image", "neighbour tiles in image"),
)


def geometry_audit(stores: list) -> pd.DataFrame:
    """One row per sample: its pixel size and source, the spot against the crop and the neighbourhood, and the
    spots used and left out (the stores' ``geometry_audit`` attribute; stores made before it have none)."""
    import zarr

    rows = []
    for store in stores:
        attrs = dict(zarr.open_group(str(store), mode="r").attrs)
        audit = attrs.get("geometry_audit")
        if audit:
            rows.append(
                {"sample": attrs.get("sample", Path(store).stem), **{h: audit.get(k) for k, h in GEOMETRY_COLUMNS}}
            )
    return pd.DataFrame(rows, columns=["sample", *(h for _, h in GEOMETRY_COLUMNS)])


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "genedml": __version__}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def stage_times(bench_dir) -> pd.DataFrame:
    """Wall time per stage from Snakemake's benchmark files (``results/benchmarks/<stage>[/<sub>]/...``)."""
    bench_dir = Path(bench_dir)
    rows = []
    for path in sorted(bench_dir.rglob("*.tsv")) if bench_dir.exists() else []:
        parts = path.relative_to(bench_dir).parts
        stage = path.stem if len(parts) == 1 else "/".join(parts[:2]) if len(parts) > 2 else parts[0]
        try:
            t = pd.read_csv(path, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        if "s" not in t:
            continue
        rss = pd.to_numeric(t["max_rss"], errors="coerce") if "max_rss" in t else pd.Series([np.nan])
        rows.append(
            {"stage": stage, "s": float(pd.to_numeric(t["s"], errors="coerce").mean()), "rss": float(rss.max())}
        )
    if not rows:
        return pd.DataFrame(columns=["stage", "jobs", "total_s", "longest_s", "max_rss_mb"])
    table = (
        pd.DataFrame(rows)
        .groupby("stage", sort=False)
        .agg(jobs=("s", "size"), total_s=("s", "sum"), longest_s=("s", "max"), max_rss_mb=("rss", "max"))
        .reset_index()
    )
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    table["_o"] = [order.get(s.split("/")[0], len(order)) for s in table["stage"]]
    table = table.sort_values(["_o", "stage"]).drop(columns="_o").reset_index(drop=True)
    for c in ("total_s", "longest_s", "max_rss_mb"):
        table[c] = table[c].round(1)
    return table


# --------------------------------------------------------------------------------------------------
# Everything the report sections read
# --------------------------------------------------------------------------------------------------


@dataclass
class ReportInputs:
    results: Path
    heads: list[HeadResults]
    folds: pd.DataFrame
    genes: pd.DataFrame
    run_datasets: list[str]  # genedml's names of the sample sheet's datasets, sorted
    facts: dict  # feature_facts of the run's feature stores
    published: pd.DataFrame  # load_published(as_printed=True)
    recipe: str
    n_top: int
    config_facts: dict = field(default_factory=dict)
    geometry: pd.DataFrame = field(default_factory=pd.DataFrame)  # geometry_audit of the run's stores
    # sections predicted without counts: {sample: {"heads": [...], "slide": bool}} (config slides / predict)
    unlabelled: dict = field(default_factory=dict)

    @property
    def figures_dir(self) -> Path:
        return self.results / "figures"

    @property
    def designs(self) -> dict:
        return fold_designs(self.folds)

    @property
    def n_sections(self) -> int:
        return int(self.folds["sample"].nunique())

    @property
    def test_samples(self) -> list[str]:
        """The held-out sections, by fold then name."""
        test = self.folds[self.folds["split"] == "test"]
        return test.sort_values(["fold", "sample"])["sample"].tolist()


def load_inputs(
    results_dir,
    heads_spec: dict,
    sheet_path,
    recipe: str,
    feature_stores: list,
    config_facts: dict | None = None,
    n_top: int = 50,
    unlabelled: dict | None = None,
) -> ReportInputs:
    results = Path(results_dir)
    heads = [load_head(results, name, spec) for name, spec in heads_spec.items()]
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str)
    datasets = sheet.get("dataset", pd.Series(["unnamed"])).fillna("unnamed")
    return ReportInputs(
        results=results,
        heads=heads,
        folds=pd.read_csv(results / "folds" / "folds.tsv", sep="\t"),
        genes=pd.read_csv(results / "genes" / "genes.tsv", sep="\t"),
        run_datasets=sorted({dataset_name(d) for d in datasets}),
        facts=feature_facts(feature_stores),
        published=load_published(as_printed=True),
        recipe=recipe,
        n_top=n_top,
        config_facts=config_facts or {},
        geometry=geometry_audit(feature_stores),
        unlabelled=unlabelled or {},
    )


def unlabelled_facts(results: Path, unlabelled: dict) -> pd.DataFrame:
    """One row per section predicted without counts: spots, tissue and lattice (bare slides), OOD summary."""
    import json

    rows = []
    for sample, spec in unlabelled.items():
        row = {"section": sample, "kind": "bare slide" if spec.get("slide") else "section without counts"}
        meta_path = results / "slides" / "metadata" / f"{sample}.json"
        if spec.get("slide") and meta_path.exists():
            meta = json.loads(meta_path.read_text())
            row.update(
                {
                    "spots": meta.get("n_spots"),
                    "tissue mm²": meta.get("area_mm2"),
                    "µm/px": meta.get("pixel_size_um_estimated"),
                    "lattice": f"{meta.get('st_technology', '')}, {meta.get('inter_spot_dist', '')} µm",
                }
            )
        ood_path = results / "ood" / f"{sample}.json"
        if ood_path.exists():
            ood = json.loads(ood_path.read_text())
            summary = ood.get("summary", ood)
            row.update(
                {
                    "spots": row.get("spots") or summary.get("n"),
                    "OOD median": summary.get("median"),
                    "OOD q90": summary.get("q90"),
                    "share OOD": summary.get("fraction_above")
                    if "fraction_above" in summary
                    else summary.get("fraction_ood"),
                    "mostly OOD": "yes (warning)" if summary.get("mostly_ood") else "no",
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)
