"""What a config costs on the GPU before anything runs: encoder calls of the embed step and their time.

The embed step is the only stage that runs the frozen encoder, once per sample. Per spot it encodes the
spot's ``grid x grid`` neighbour window in centred mode (the centre tile is the spot's local crop, so the
local crop costs nothing extra; tiles outside the image are skipped) plus any extra views of the local crop
(``encoder.local_views`` > 1). So

    encoder calls of a sample <= spots x (grid x grid + local_views - 1)

an upper bound (edge spots have fewer in-image tiles; the reference code encodes the local crop apart,
26 calls a spot at grid 5). ``neighbour_mode: grid`` shares tiles between spots and needs fewer calls;
the bound still holds, and ``genedml bench embed`` measures the real count.

Spots come from the sample's ``st/{id}.h5ad`` when it is present and readable, else from the spot count
HEST-1k lists for the section (``spots_under_tissue`` in ``genedml/data/sections.tsv``), so the cost of a
paper config is known before the data is downloaded. GPU time is calls / ``tiles_per_second``, a figure the
caller states: genedml has not measured UNI ViT-L/16 on a GPU (``DEFAULT_TILES_PER_SECOND`` is an assumption,
see its comment). ``genedml plan-cost --configfile ...`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genedml.errors import InputError
from genedml.tiles.encoder_zoo import widths as zoo_widths

# ASSUMPTION, not a measurement: UNI (ViT-L/16, 224 px) is ~61.6 GMACs (~123 GFLOP) a tile; in fp32 (PyTorch
# runs fp32 matmuls without TF32 by default) an A100's 19.5 TFLOPS allow at most ~160 tiles/s, ~100 at 60%
# utilisation. bf16 or a newer GPU are several times faster; slide reading can also be the bottleneck.
DEFAULT_TILES_PER_SECOND = 100.0
# embedding width of the encoders whose width is known without building them (the feature-store estimate):
# the encoder zoo's cards, and timm's resnet18
KNOWN_WIDTHS = {**zoo_widths(), "resnet18": 512}
TOKENS_PER_CROP = 197  # a ViT/16 at 224 px: CLS + 14 x 14 patches


@dataclass(frozen=True)
class SampleCost:
    sample: str
    patient: str
    spots: int | None  # None: no st file and no registry count
    spots_from: str  # "st file" | "HEST-1k table" | "unknown"
    calls: int  # upper bound of the encoder calls in centred mode (0 when spots are unknown)
    grid_calls: int = 0  # estimated encoder calls in grid mode (shared grid tiles + local crops)
    grid_tiles: int = 0  # estimated shared grid tiles (grid mode)
    technology: str = ""  # e.g. Visium, Spatial Transcriptomics ("" when unknown)
    pitch_um: float | None = None  # spot centre-to-centre distance used for the grid estimate


@dataclass(frozen=True)
class PlanCost:
    name: str  # what is costed (the config files)
    dataset: str | None
    samples: list[SampleCost]
    calls_per_spot: int
    neighbour_mode: str
    local_views: int
    store_bytes_per_spot: int | None  # uncompressed float16 feature store (None: encoder width unknown)
    tiles_per_second: float
    precision: str
    n_folds: int | None
    heads: list[str]
    pixel_heads: list[str] = field(default_factory=list)  # heads that read the spot images
    spot_px: int = 0  # spot_images.px (the schema's default when the config sets none)
    tiles_per_second_from: str = "assumed"  # "assumed" | "given" | the GPU benchmark file it was read from
    store: dict = field(default_factory=dict)  # bytes of every store by layout (store_bytes), {} when unknown

    @property
    def spots(self) -> int:
        return sum(s.spots or 0 for s in self.samples)

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.samples)

    @property
    def grid_calls(self) -> int:
        return sum(s.grid_calls for s in self.samples)

    @property
    def gpu_seconds(self) -> float:
        """Of the configured neighbour mode."""
        return (self.grid_calls if self.neighbour_mode == "grid" else self.calls) / self.tiles_per_second

    def mode_table(self) -> pd.DataFrame:
        """Both neighbour modes side by side: encoder calls, GPU hours, feature-store GB (the configured mode
        is marked)."""
        rows = []
        for mode, calls in (("centred", self.calls), ("grid", self.grid_calls)):
            row = {
                "neighbour_mode": mode + (" (configured)" if mode == self.neighbour_mode else ""),
                "encoder_calls": calls,
                "calls_per_spot": round(calls / max(self.spots, 1), 2),
                "gpu_hours": round(calls / self.tiles_per_second / 3600, 2),
            }
            for layout, size in self.store.get(mode, {}).items():
                row[f"store_gb_{layout}"] = round(size / 1e9, 1)
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def train_jobs(self) -> int | None:
        return None if self.n_folds is None else self.n_folds * len(self.heads)

    def format(self) -> str:
        unknown = [s.sample for s in self.samples if s.spots is None]
        sources = sorted({s.spots_from for s in self.samples if s.spots is not None})
        bound = "at most " if self.calls_per_spot > 1 else ""
        views = f" + {self.local_views - 1} extra views of the local crop" if self.local_views > 1 else ""
        rate = {
            "assumed": "an ASSUMPTION, not a measurement: give --tiles-per-second or --gpu-bench",
            "given": "as given",
        }.get(self.tiles_per_second_from, self.tiles_per_second_from)
        lines = [
            f"{self.name}: {self.dataset or 'sample sheet'}, {len(self.samples)} samples, "
            f"{self.spots:,} spots (from {', '.join(sources) or 'nowhere: no st files yet'})",
            f"  encoder calls, centred mode: {bound}{self.calls:,} = spots x {self.calls_per_spot} "
            f"(grid x grid neighbour tiles, the centre one being the local crop{views})",
            f"  encoder calls, grid mode: about {self.grid_calls:,} = {sum(s.grid_tiles for s in self.samples):,} "
            "shared grid tiles (estimated from each section's spot count and pitch as a round tissue) + "
            f"{self.local_views} local crop(s) a spot",
            f"  GPU time of the embed step ({self.neighbour_mode} mode, configured): {_duration(self.gpu_seconds)} "
            f"at {self.tiles_per_second:g} tiles/s (precision {self.precision}; {rate})",
        ]
        if self.store:
            lines.append("  both modes (store GB: float16, before compression, which gains little on embeddings):")
            lines += ["    " + line for line in self.mode_table().to_string(index=False).splitlines()]
        if self.store_bytes_per_spot and not self.store:
            per_spot = self.store_bytes_per_spot
            lines.append(
                f"  feature stores: about {self.spots * per_spot / 1e9:,.1f} GB = spots x {per_spot / 1e3:,.0f} KB "
                "(float16, before compression, which gains little on embeddings)"
            )
        if self.pixel_heads:
            raw = self.spot_px * self.spot_px * 3
            lines.append(
                f"  spot images ({', '.join(self.pixel_heads)}: spot_encoder resnet18): about "
                f"{self.spots * raw / 1e9:,.1f} GB = spots x {raw / 1e3:,.0f} KB (uint8 at {self.spot_px} px, before "
                "compression; ~0.7 of it on disk on H&E; a train job holds its fold's sections in memory)"
            )
        if self.train_jobs is not None:
            lines.append(
                f"  train jobs: {self.train_jobs} = {self.n_folds} folds x {len(self.heads)} heads "
                f"(on the cached features; not costed here)"
            )
        if unknown:
            lines.append(f"  no spot count for {len(unknown)} samples (not counted): {', '.join(unknown)}")
        return "\n".join(lines)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([s.__dict__ for s in self.samples])


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def load_config(configfiles: list[str]) -> dict:
    """Config files merged in order (as ``snakemake --configfile`` merges them), defaults filled in."""
    import yaml

    from genedml.pipeline.schema import ConfigError, resolved_config

    try:
        return yaml.safe_load(resolved_config([str(p) for p in configfiles]))
    except ConfigError as exc:
        raise InputError(str(exc)) from None


def calls_per_spot(config: dict) -> int:
    """Upper bound of the encoder calls a spot (module doc)."""
    grid = int(config["tiles"]["grid"])
    return grid * grid + int(config["encoder"]["local_views"]) - 1


def store_bytes_per_spot(config: dict) -> int | None:
    """Uncompressed float16 bytes a spot in a centred-mode store as configured: the local embedding, the
    neighbour tiles, the extra views' CLS and, when cached, every view's token map (None when the encoder
    width is unknown); ``store_bytes`` of one spot."""
    sizes = store_bytes(config, 1, 0)
    if not sizes:
        return None
    return sizes["centred"]["tokens" if config["encoder"]["cache_local_tokens"] else "views"]


HEST_TABLE = Path(__file__).resolve().parents[1] / "data" / "hest_v1_1_0_samples.tsv"
# spot pitch (µm) when HEST's table gives none (its Xenium rows): HEST pools Xenium transcripts into
# Visium-like pseudo-spots, so they are costed at Visium's pitch; the output says so
DEFAULT_PITCH_UM = 100.0
HEX_TECHNOLOGIES = ("visium", "xenium")  # hexagonal spot lattices; the others are square


def read_hest_table(path: str | Path | None = None) -> pd.DataFrame:
    """HEST-1k's sample table: genedml's copy of v1.1.0 (``genedml/data/hest_v1_1_0_samples.tsv``) or the
    metadata CSV a HEST-1k download carries (``HEST_v1_1_0.csv``), with the columns ``plan`` reads."""
    path = Path(path) if path else HEST_TABLE
    if not path.is_file():
        raise InputError("HEST metadata table not found", None, path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    table = pd.read_csv(path, sep=sep, comment="#" if sep == "\t" else None, encoding="utf-8-sig")
    need = ["id", "st_technology", "spots_under_tissue", "inter_spot_dist", "pixel_size_um_estimated"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise InputError(f"not a HEST metadata table: no column(s) {', '.join(missing)}", None, path)
    return table


def hest_samples(table: pd.DataFrame, ids: list[str] | None = None, **filters) -> pd.DataFrame:
    """Rows of HEST's table: ``ids`` (None or ["all"]: every row), then ``column=value`` filters (a value may be
    a list; case-insensitive), e.g. ``st_technology="Visium", species="Homo sapiens"``."""
    rows = table
    if ids and ids != ["all"]:
        unknown = sorted(set(ids) - set(table["id"]))
        if unknown:
            raise InputError(f"HEST id(s) not in the HEST table: {', '.join(unknown[:10])}")
        rows = table.set_index("id").loc[ids].reset_index()
    for column, wanted in filters.items():
        if wanted is None:
            continue
        if column not in rows.columns:
            raise InputError(f"the HEST table has no column {column!r}")
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        rows = rows[rows[column].astype(str).str.lower().isin([w.lower() for w in wanted])]
    if rows.empty:
        raise InputError("no HEST sample matches the ids and filters given")
    return rows


def grid_tiles_estimate(
    spots: int, pitch_um: float, tile_um: float, grid: int, hexagonal: bool, stride: float = 1.0
) -> int:
    """Shared grid tiles of a section in grid mode, estimated without its spot positions: the spots cover a
    round tissue of ``spots`` x the area of a spot's lattice cell; the tile lattice (nodes ``stride`` tiles
    apart) covers it and a margin of ``grid // 2`` tiles all round. Never more than centred mode's tiles. With
    a stride below 1 a spot uses every 1/stride-th node only, so spots far apart (ST) leave nodes unused and
    the estimate is high (by up to a half on small ST sections).
    ``tests/unit/pipeline/test_cost.py`` checks it against the tile stage's exact count on spot lattices."""
    if spots <= 0:
        return 0
    cell = pitch_um * pitch_um * (np.sqrt(3) / 2 if hexagonal else 1.0)
    radius = (np.sqrt(spots * cell / np.pi) / tile_um + grid // 2) / stride  # in lattice nodes
    return int(min(np.pi * radius * radius, spots * grid * grid))


def store_bytes(config: dict, spots: int, grid_tiles: int) -> dict:
    """Bytes of the feature stores (float16, uncompressed) per neighbour mode and layout: ``plain`` (local +
    neighbours), ``views`` (+ the extra dihedral views' CLS when encoder.local_views > 1, else as plain),
    ``tokens`` (+ every view's 197-token map: encoder.cache_local_tokens). {} when the width is unknown."""
    enc = config["encoder"]
    dim = KNOWN_WIDTHS.get(enc.get("timm_name") or enc["name"])
    if dim is None:
        return {}
    row = 2 * dim  # one float16 embedding
    grid, views = int(config["tiles"]["grid"]), int(enc["local_views"])
    extra_views = spots * views * row if views > 1 else 0
    tokens = spots * views * TOKENS_PER_CROP * row
    neighbours = {"centred": spots * grid * grid * row, "grid": grid_tiles * row + spots * grid * grid * 4}
    out = {}
    for mode, neighbour in neighbours.items():
        plain = spots * row + neighbour
        out[mode] = {"plain": plain, "views": plain + extra_views, "tokens": plain + extra_views + tokens}
    return out


def gpu_bench_rate(path: str | Path, mode: str) -> tuple[float, str]:
    """End-to-end embed tiles/s of ``mode`` from a ``genedml bench gpu --out`` JSON, and where it was measured.
    A smoke run (``--smoke``: a 2-layer ViT) is refused: its rate is not UNI's."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text())
        run = data["run"]
        rows = [r for r in data["rows"] if r.get("mode") == mode and str(r.get("row", "")).startswith("embed")]
    except FileNotFoundError:
        raise InputError("GPU benchmark file not found (genedml bench gpu --out writes it)", None, path) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a `genedml bench gpu` result ({type(exc).__name__}: {exc})", None, path) from None
    if run.get("smoke"):
        raise InputError("a smoke run (--smoke: a tiny ViT) measures no real rate; run the full benchmark", None, path)
    if not rows:
        raise InputError(f"the GPU benchmark has no end-to-end embed row for {mode} mode", None, path)
    rate = float(rows[0]["tiles_per_s"])
    if not rate > 0:
        raise InputError(f"the GPU benchmark's {mode} rate is {rate}, not positive", None, path)
    return rate, f"measured end to end on {run.get('device_name') or run.get('device', '?')} ({path})"


def tile_um(config: dict, native_mpp: float | None) -> float | None:
    """A tile's side in µm: tiles.tile_px x tiles.target_mpp (x the slide's own µm/px when native)."""
    target = config["tiles"]["target_mpp"]
    mpp = native_mpp if target == "native" else float(target)
    return None if not mpp or mpp != mpp else float(config["tiles"]["tile_px"]) * float(mpp)


def cost_sheet(config: dict) -> pd.DataFrame:
    """The samples a config trains on: its sample sheet, or for a ``dataset`` the sections it names (all of them
    when ``samples`` is null, those present in the data folder once it holds any)."""
    from genedml.io.sample_sheet import read_sample_sheet, registry_sheet, sample_naming, samples_present

    samples, dataset, source = config["samples"], config["dataset"], config["data"]["source"]
    if isinstance(samples, str):
        return read_sample_sheet(samples)
    if not dataset:
        raise InputError("config needs `samples` (a sample sheet TSV) or `dataset` to cost")
    folder = config["data"].get("hest_dir" if source == "hest" else "legacy_st_dir")
    present = samples_present(source, folder) if folder and Path(folder).is_dir() else set()
    wanted = list(samples or []) or None
    return registry_sheet(dataset, wanted, sample_naming(source), present if present and not wanted else None)


def st_spots(path: Path) -> int | None:
    """Spots of an expression file, or None when it is absent or unreadable."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        import anndata as ad

        return int(ad.read_h5ad(path, backed="r").n_obs)
    except Exception:  # a placeholder or a broken file: fall back to the registry count
        return None


def registry_spots(dataset: str | None, sample: str) -> int | None:
    from genedml.io.datasets import lookup

    if not dataset:
        return None
    try:
        row = lookup(dataset, sample)
    except InputError:  # a dataset genedml does not know (e.g. demo)
        return None
    return None if row is None else int(row["spots_under_tissue"])


def plan_cost(
    config: dict,
    tiles_per_second: float | None = None,
    name: str = "config",
    hest: pd.DataFrame | None = None,
    hest_table: pd.DataFrame | None = None,
    gpu_bench: str | Path | None = None,
) -> PlanCost:
    """The embed step's encoder calls (both neighbour modes), GPU time and feature-store bytes for a config
    (defaults filled in), and its train jobs. ``hest``: rows of HEST's table to cost instead of the config's
    samples (the config still gives tiles, encoder, folds and heads). ``hest_table``: where a sample's
    technology, pitch and µm/px are looked up (default: genedml's copy of HEST's table). The rate: given, else
    the configured mode's end-to-end rate from a ``genedml bench gpu`` file, else the assumed default."""
    from genedml.io.hest import SamplePaths
    from genedml.pipeline.plan import CONVERTED, select_heads
    from genedml.study.folds import FoldSpec, plan_folds

    mode = config["tiles"]["neighbour_mode"]
    rate_from = "given"
    if tiles_per_second is None and gpu_bench:
        tiles_per_second, rate_from = gpu_bench_rate(gpu_bench, mode)
    if tiles_per_second is None:
        tiles_per_second, rate_from = DEFAULT_TILES_PER_SECOND, "assumed"
    if tiles_per_second <= 0:
        raise InputError(f"tiles per second must be positive, got {tiles_per_second}")
    facts = (hest_table if hest_table is not None else read_hest_table()).set_index("id")
    if hest is not None:
        patients = hest["patient"].fillna("") if "patient" in hest.columns else pd.Series("", index=hest.index)
        sheet = pd.DataFrame({"sample": hest["id"], "patient": [p or i for p, i in zip(patients, hest["id"])]})
        sheet["hest_id"] = hest["id"].tolist()
    else:
        sheet = cost_sheet(config)
    per_spot = calls_per_spot(config)
    grid, views = int(config["tiles"]["grid"]), int(config["encoder"]["local_views"])
    source = config["data"]["source"]
    # where the st files are (or will be): the demo's and the legacy import's outputs, or the HEST-1k folder
    hest_dir = None if hest is not None else CONVERTED.get(source, config["data"].get("hest_dir"))
    rows = []
    for r in sheet.itertuples(index=False):
        dataset = getattr(r, "dataset", None) or config["dataset"]
        hest_id = getattr(r, "hest_id", "") or r.sample
        fact = facts.loc[hest_id] if hest_id in facts.index else None
        spots = st_spots(SamplePaths.in_hest_dir(hest_dir, r.sample).st) if hest_dir else None
        where = "st file"
        if spots is None and fact is not None:
            spots, where = int(fact["spots_under_tissue"]), "HEST-1k table"
        if spots is None:
            spots, where = registry_spots(dataset, r.sample), "HEST-1k table"
        native_mpp = None if fact is None else float(fact["pixel_size_um_estimated"])
        if spots is None and source == "demo" and hest is None:  # not generated yet: its whole spot lattice
            from genedml.io.demo import DemoSpec, spot_lattice

            demo = DemoSpec.from_config(config["demo"])
            spots, where, native_mpp = len(spot_lattice(demo)), "demo lattice (at most)", demo.mpp
        if spots is None:
            where = "unknown"
        technology = "" if fact is None else str(fact["st_technology"])
        pitch = None if fact is None else float(fact["inter_spot_dist"])
        pitch = pitch if pitch and pitch == pitch else DEFAULT_PITCH_UM
        side = tile_um(config, native_mpp)
        tech = technology.lower()
        hexagonal = not tech or (tech.startswith(HEX_TECHNOLOGIES) and "hd" not in tech)  # Visium HD: square bins
        stride = float(config["tiles"]["grid_stride"])
        tiles = (
            grid_tiles_estimate(spots or 0, pitch, side, grid, hexagonal, stride) if side else (spots or 0) * grid**2
        )
        rows.append(
            SampleCost(
                r.sample,
                r.patient,
                spots,
                where,
                (spots or 0) * per_spot,
                grid_calls=tiles + (spots or 0) * views,
                grid_tiles=tiles,
                technology=technology,
                pitch_um=pitch,
            )
        )
    try:
        n_folds = int(plan_folds(sheet, FoldSpec.from_config(config["folds"]), config["dataset"])["fold"].nunique())
    except InputError:
        n_folds = None
    chosen = select_heads(config["heads"], config["run_heads"])
    heads = list(chosen)
    n_spots = sum(r.spots or 0 for r in rows)
    return PlanCost(
        name=name,
        dataset=config["dataset"] if hest is None else "HEST-1k table",
        samples=rows,
        calls_per_spot=per_spot,
        neighbour_mode=mode,
        local_views=views,
        store_bytes_per_spot=store_bytes_per_spot(config),
        tiles_per_second=float(tiles_per_second),
        precision=config["encoder"]["precision"],
        n_folds=n_folds,
        heads=heads,
        pixel_heads=[h for h, cfg in chosen.items() if _reads_pixels(cfg)],
        spot_px=int(config["spot_images"]["px"]),
        tiles_per_second_from=rate_from,
        store=store_bytes(config, n_spots, sum(r.grid_tiles for r in rows)),
    )


def _reads_pixels(cfg: dict) -> bool:
    from genedml.heads import head_class

    cls = head_class(cfg["type"])
    return cls.needs_spot_images(cls.settings(cfg))
