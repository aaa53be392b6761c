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

import pandas as pd

from genedml.errors import InputError

# ASSUMPTION, not a measurement: UNI (ViT-L/16, 224 px) is ~61.6 GMACs (~123 GFLOP) a tile; in fp32 (PyTorch
# runs fp32 matmuls without TF32 by default) an A100's 19.5 TFLOPS allow at most ~160 tiles/s, ~100 at 60%
# utilisation. bf16 or a newer GPU are several times faster; slide reading can also be the bottleneck.
DEFAULT_TILES_PER_SECOND = 100.0
# embedding width of the encoders whose width is known without building them (the feature-store estimate)
KNOWN_WIDTHS = {"uni": 1024}
TOKENS_PER_CROP = 197  # a ViT/16 at 224 px: CLS + 14 x 14 patches


@dataclass(frozen=True)
class SampleCost:
    sample: str
    patient: str
    spots: int | None  # None: no st file and no registry count
    spots_from: str  # "st file" | "HEST-1k table" | "unknown"
    calls: int  # upper bound of the encoder calls (0 when spots are unknown)


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

    @property
    def spots(self) -> int:
        return sum(s.spots or 0 for s in self.samples)

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.samples)

    @property
    def gpu_seconds(self) -> float:
        return self.calls / self.tiles_per_second

    @property
    def train_jobs(self) -> int | None:
        return None if self.n_folds is None else self.n_folds * len(self.heads)

    def format(self) -> str:
        unknown = [s.sample for s in self.samples if s.spots is None]
        sources = sorted({s.spots_from for s in self.samples if s.spots is not None})
        bound = "at most " if self.calls_per_spot > 1 else ""
        views = f" + {self.local_views - 1} extra views of the local crop" if self.local_views > 1 else ""
        lines = [
            f"{self.name}: {self.dataset or 'sample sheet'}, {len(self.samples)} samples, "
            f"{self.spots:,} spots (from {', '.join(sources) or 'nowhere: no st files yet'})",
            f"  encoder calls: {bound}{self.calls:,} = spots x {self.calls_per_spot} "
            f"(grid x grid neighbour tiles, the centre one being the local crop{views}; {self.neighbour_mode} mode)",
            f"  GPU time of the embed step: {_duration(self.gpu_seconds)} at {self.tiles_per_second:g} tiles/s "
            f"(precision {self.precision}; the rate is an assumption unless you measured it: --tiles-per-second)",
        ]
        if self.store_bytes_per_spot:
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
    """Uncompressed float16 bytes a spot in a centred-mode store: the local embedding, the neighbour tiles,
    the extra views' CLS and, when cached, every view's token map (None when the encoder width is unknown)."""
    enc = config["encoder"]
    dim = KNOWN_WIDTHS.get(enc.get("timm_name") or enc["name"])
    if dim is None:
        return None
    views = int(enc["local_views"])
    rows = 1 + int(config["tiles"]["grid"]) ** 2 + (views if views > 1 else 0)
    if enc["cache_local_tokens"]:
        rows += views * TOKENS_PER_CROP
    return 2 * dim * rows


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


def plan_cost(config: dict, tiles_per_second: float = DEFAULT_TILES_PER_SECOND, name: str = "config") -> PlanCost:
    """The embed step's encoder calls and GPU time for a config (defaults filled in), and its train jobs."""
    from genedml.io.hest import SamplePaths
    from genedml.pipeline.plan import CONVERTED, select_heads
    from genedml.study.folds import FoldSpec, plan_folds

    if tiles_per_second <= 0:
        raise InputError(f"tiles per second must be positive, got {tiles_per_second}")
    sheet = cost_sheet(config)
    per_spot = calls_per_spot(config)
    source = config["data"]["source"]
    # where the st files are (or will be): the demo's and the legacy import's outputs, or the HEST-1k folder
    hest_dir = CONVERTED.get(source, config["data"].get("hest_dir"))
    rows = []
    for r in sheet.itertuples(index=False):
        dataset = getattr(r, "dataset", None) or config["dataset"]
        spots = st_spots(SamplePaths.in_hest_dir(hest_dir, r.sample).st) if hest_dir else None
        where = "st file"
        if spots is None:
            spots, where = registry_spots(dataset, r.sample), "HEST-1k table"
        if spots is None:
            where = "unknown"
        rows.append(SampleCost(r.sample, r.patient, spots, where, (spots or 0) * per_spot))
    try:
        n_folds = int(plan_folds(sheet, FoldSpec.from_config(config["folds"]), config["dataset"])["fold"].nunique())
    except InputError:
        n_folds = None
    chosen = select_heads(config["heads"], config["run_heads"])
    heads = list(chosen)
    return PlanCost(
        name=name,
        dataset=config["dataset"],
        samples=rows,
        calls_per_spot=per_spot,
        neighbour_mode=config["tiles"]["neighbour_mode"],
        local_views=int(config["encoder"]["local_views"]),
        store_bytes_per_spot=store_bytes_per_spot(config),
        tiles_per_second=float(tiles_per_second),
        precision=config["encoder"]["precision"],
        n_folds=n_folds,
        heads=heads,
        pixel_heads=[h for h, cfg in chosen.items() if _reads_pixels(cfg)],
        spot_px=int(config["spot_images"]["px"]),
    )


def _reads_pixels(cfg: dict) -> bool:
    from genedml.heads import head_class

    cls = head_class(cfg["type"])
    return cls.needs_spot_images(cls.settings(cfg))
