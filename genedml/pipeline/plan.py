"""The run plan: what a validated config means for this run, in one place.

``RunPlan(config)`` turns the config (already checked against the schema, defaults filled: Snakemake's
``validate`` in ``workflow/rules/common.smk``) into everything the rules need: the sample sheet and where
each sample's files are, the heads to run, the fold plan, the sections to predict, the report's head specs,
and each stage's slice of the config in the generated form its CLI subcommand reads (``stage_flags``).
The rules hold file patterns and resources; every decision about the config is made here.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from genedml.io.hest import SamplePaths
from genedml.pipeline import schema
from genedml.pipeline.checks import check_config, encoder_weights
from genedml.pipeline.run_heads import expand_heads, key_label, select_names

RESULTS = "results"
DEMO_DIR = f"{RESULTS}/demo/hest"  # data.source demo: rule demo_data writes the sections here
IMPORT_DIR = f"{RESULTS}/import/hest"  # data.source legacy_st: rule import_st converts the sections here
# data.source spaceranger: rule import_spaceranger converts each sample's outs/ and image here
SPACERANGER_DIR = f"{RESULTS}/import/spaceranger/hest"
# the sources whose samples a rule converts into the HEST layout first, and where
CONVERTED = {"demo": DEMO_DIR, "legacy_st": IMPORT_DIR, "spaceranger": SPACERANGER_DIR}
GENE_SEMANTICS = f"{RESULTS}/genes/semantics.npz"
SLIDES_DIR = f"{RESULTS}/slides"  # bare slides (config `slides`): virtual spots, QC, OOD scores, maps
# out-of-distribution scores: the training spots' embeddings per fold (rule ood_reference), and the scores
# of every section predicted without counts, slides and predict samples (rule ood_score)
OOD_DIR = f"{RESULTS}/ood"
OOD_REFERENCE = f"{OOD_DIR}/reference"
# head types whose gene queries are text embeddings of the genes (rule gene_semantics makes them once a run)
SEMANTIC_HEAD_TYPES = ("dkan",)


def select_heads(heads: dict, keep: list | None) -> dict:
    """The ``heads`` mapping restricted to ``keep`` (config ``run_heads``; None keeps every head), in keep's
    order. Snakemake merges an overlay config's ``heads`` into config.yaml's key by key, so an overlay that
    wants fewer heads names them in ``run_heads``."""
    if not keep:
        return dict(heads)
    unknown = [h for h in keep if h not in heads]
    if unknown:
        raise ValueError(f"run_heads names {unknown}, which are not under `heads` ({', '.join(heads)})")
    return {h: heads[h] for h in keep}


def encoder_sections(config: dict) -> dict[str, dict]:
    """name -> encoder section, in order: config ``encoders`` when set (a matrix run), else ``encoder``.
    Raises ValueError for two encoders of one name (they would share results/features/{name}/)."""
    items = config.get("encoders") or [config["encoder"]]
    out: dict[str, dict] = {}
    for enc in items:
        if enc["name"] in out:
            raise ValueError(f"config encoders: {enc['name']!r} is listed twice (each names results/features/<name>/)")
        out[enc["name"]] = enc
    return out


def check_heads(heads: dict) -> dict:
    """Every head's resolved settings, resolved now so that a typo fails when the run starts, naming the head."""
    from genedml.heads import head_class

    resolved = {}
    for name, cfg in heads.items():
        try:
            resolved[name] = head_class(cfg["type"]).checked_settings(cfg)
        except ValueError as exc:
            raise ValueError(f"config heads.{name}: {exc}") from None
    return resolved


def data_folder(data: dict) -> str | None:
    """The folder the config's ``data.source`` reads: ``hest_dir`` or ``legacy_st_dir`` (None for the demo)."""
    source = data["source"]
    if source in ("demo", "spaceranger"):  # spaceranger: each sample's folders are in the sample sheet
        return None
    key = "hest_dir" if source == "hest" else "legacy_st_dir"
    if not data.get(key):
        raise ValueError(f"config data.source is {source!r} but data.{key} is not set")
    return data[key]


class RunPlan:
    """Everything the rules need from a config that Snakemake has validated (defaults filled in)."""

    def __init__(self, config: dict):
        from genedml.io.sample_sheet import run_sheet
        from genedml.report.specs import report_specs, sweep_params
        from genedml.study.folds import FoldSpec, plan_folds

        self.config = config
        data = config["data"]
        self.source = data["source"]
        self.folder = data_folder(data)
        self.sheet, self.sheet_tsv = run_sheet(config["samples"], config["dataset"], self.source, self.folder)
        self.sheet_path = self.sheet_tsv or f"{RESULTS}/samples.tsv"  # rule sample_sheet writes the latter
        self.samples = self.sheet["sample"].tolist()
        self.patient = dict(zip(self.sheet["sample"], self.sheet["patient"]))
        # the encoders: `encoders` (a matrix run), else the one `encoder`; the first is the run's primary
        # encoder (out-of-distribution scores of predicted sections are computed on its features)
        self.encoders = encoder_sections(config)
        self.encoder = next(iter(self.encoders))
        # every head once per encoder, protocol and seed, and the controls (genedml.pipeline.run_heads)
        self.run_heads = expand_heads(
            select_heads(config["heads"], config["run_heads"]),
            list(self.encoders),
            config["protocol"],
            config["controls"],
        )
        self.heads = {key: r.config for key, r in self.run_heads.items()}
        self.resolved = check_heads(self.heads)  # resolved once: rules ask per job
        for name, enc in self.encoders.items():
            check_config({**config, "encoder": enc}, self.resolved, f"{RESULTS}/features/{name}")
        self.weights = {name: encoder_weights({"encoder": enc}) for name, enc in self.encoders.items()}
        self.encoder_weights = self.weights[self.encoder]
        from genedml.tiles.encoders import EmbedRuntime

        # checked once here: the embed rule asks for them per job (three resources of every embed job)
        self._runtime = {
            name: schema.with_defaults(EmbedRuntime.section, enc, EmbedRuntime.keys)
            for name, enc in self.encoders.items()
        }
        # where the sections are read: generated (demo), converted (legacy_st) or a HEST-1k folder
        self.hest_dir = CONVERTED.get(self.source, self.folder)
        self.predict_samples, self.predict_hest_dir, self.predict_heads = self._predict_plan()
        self.slides, self.slide_heads = self._slides_plan()
        self.slide_samples = list(self.slides)
        self.fold_plan = plan_folds(self.sheet, FoldSpec.from_config(config["folds"]), config["dataset"])
        self.folds = sorted(self.fold_plan["fold"].unique().tolist())
        # sections some fold holds out: only these get predictions, metrics and maps (a fold table may train
        # on a section that no fold tests)
        held_out = set(self.fold_plan.loc[self.fold_plan["split"] == "test", "sample"])
        self.test_samples = [s for s in self.samples if s in held_out]
        self.train_only = [s for s in self.samples if s not in held_out]
        self.head_report = self._report_specs(report_specs)  # fails early, naming the head, on a bad `report:` key
        self.sweeps = sweep_params(self.head_report)

    # --- sections ---------------------------------------------------------------------------------
    def sample_files(self, sample: str) -> dict[str, str]:
        """Slide, expression and metadata of a sample in the HEST-1k layout."""
        if sample in self.slides:  # a bare slide: the positions and metadata come from rule virtual_spots
            return {
                "slide": self.slides[sample]["slide"],
                "st": f"{SLIDES_DIR}/st/{sample}.h5ad",
                "metadata": f"{SLIDES_DIR}/metadata/{sample}.json",
            }
        if sample in self.predict_samples:
            return SamplePaths.in_hest_dir(self.predict_hest_dir, sample).as_dict()
        if self.source in CONVERTED:  # made by rule demo_data / import_st / import_spaceranger
            return SamplePaths.layout(self.hest_dir, sample).as_dict()
        return SamplePaths.in_hest_dir(self.hest_dir, sample).as_dict()

    @staticmethod
    def layout_patterns(folder: str) -> dict[str, str]:
        """The HEST-1k layout under ``folder`` with a ``{sample}`` wildcard (outputs of demo_data, import_st)."""
        return SamplePaths.layout(folder, "{sample}").as_dict()

    def features_path(self, sample: str, encoder: str | None = None) -> str:
        """A sample's feature store of an encoder (default: the run's primary encoder)."""
        return f"{RESULTS}/features/{encoder or self.encoder}/{sample}.zarr"

    def feature_stores(self, encoder: str | None = None) -> list[str]:
        """Every cross-validation sample's feature store of one encoder, or of every encoder (None)."""
        encoders = [encoder] if encoder else list(self.encoders)
        return [self.features_path(s, e) for e in encoders for s in self.samples]

    @property
    def training_inputs_path(self) -> str:
        """The index of every section's features and targets (rule training_inputs) of the primary encoder."""
        return self.training_inputs_of_encoder(self.encoder)

    @staticmethod
    def training_inputs_of_encoder(encoder: str) -> str:
        """The index of every section's features and targets (rule training_inputs) of one encoder."""
        return f"{RESULTS}/features/{encoder}/training_inputs.tsv"

    def encoder_of(self, head: str) -> str:
        """The encoder a run head is trained on."""
        return self.run_heads[head].encoder

    def training_inputs_of(self, head: str) -> str:
        """The training-inputs index a run head's train jobs read (its encoder's)."""
        return self.training_inputs_of_encoder(self.encoder_of(head))

    def heads_of_encoder(self, encoder: str, controls: bool = True) -> list[str]:
        """The run heads trained on one encoder's features (with or without the controls)."""
        return [k for k, r in self.run_heads.items() if r.encoder == encoder and (controls or r.control is None)]

    def heads_without_controls(self) -> list[str]:
        """Every run head but the controls: those that predict sections without counts unless the config
        names others."""
        return [k for k, r in self.run_heads.items() if r.control is None]

    def mapped_heads(self) -> list[str]:
        """The run heads whose held-out sections are drawn as spatial maps: one per head and encoder (its
        first protocol and seed as the config lists them), no controls (a mean predictor's map is flat).
        Maps of every seed and protocol would multiply the slowest figures without showing anything new."""
        first = {}
        for key, r in self.run_heads.items():
            if r.control is None:
                first.setdefault((r.head, r.encoder), key)
        return list(first.values())

    def comparison_keys(self) -> str:
        """Every run head's head, type, encoder, protocol, seed, control and label (JSON), for the comparison."""
        keys = {k: {**r.facts(), "label": self.head_report[k]["label"]} for k, r in self.run_heads.items()}
        return json.dumps(keys, sort_keys=True)

    def _report_specs(self, report_specs) -> dict:
        """Each run head's report spec: its head's, labelled with what sets it apart, and its facts."""
        specs = report_specs(self.heads)
        many = len(self.encoders) > 1
        for key, spec in specs.items():
            r = self.run_heads[key]
            spec["label"] = key_label(r, spec["label"] if spec["label"] != key else r.head, many)
            spec.update(r.facts())
        return specs

    @staticmethod
    def targets_path(sample: str) -> str:
        return f"{RESULTS}/targets/{sample}.h5ad"

    @staticmethod
    def spot_images_path(sample: str) -> str:
        """The sample's spot-image store (rule spot_images): one per sample, shared by every encoder and head."""
        return f"{RESULTS}/spot_images/{sample}.zarr"

    def sample_pairs(self, kind: str) -> list[str]:
        """``sample=path`` for every cross-validation sample (the train step's --features / --targets /
        --spot-images; a rule passes the list with ``:q``)."""
        path = {"features": self.features_path, "targets": self.targets_path, "spot_images": self.spot_images_path}
        return [f"{s}={path[kind](s)}" for s in self.samples]

    def sheet_value(self, sample: str, column: str) -> str:
        """A sample's value in an optional sample-sheet column ('' when absent)."""
        if column not in self.sheet.columns:
            return ""
        value = self.sheet.loc[self.sheet["sample"] == sample, column].iloc[0]
        return value if isinstance(value, str) else ""

    # --- legacy-ST import ----------------------------------------------------------------------
    def legacy_section(self, sample: str) -> str:
        """Section name of a sample in the legacy files (sample-sheet column ``section``, else the sample)."""
        return self.sheet_value(sample, "section") or sample

    def legacy_files(self, sample: str) -> dict[str, str]:
        from genedml.io.legacy_st import LegacyFiles

        files = LegacyFiles.find(self.folder, self.legacy_section(sample))
        return {"counts": str(files.counts), "spots": str(files.spots), "image": str(files.image)}

    def spaceranger_files(self, sample: str) -> dict[str, str]:
        """A Space Ranger sample's outs/ folder and full-resolution image (sample-sheet columns)."""
        return {"outs": self.sheet_value(sample, "spaceranger"), "image": self.sheet_value(sample, "image")}

    def gene_list_file(self) -> list[str]:
        """The gene-list file rule select_genes reads, as an input (none for a built-in list or the top n)."""
        from genedml.pipeline.checks import is_builtin_gene_list

        value = self.config["genes"].get("list")
        return [value] if value and not is_builtin_gene_list(value) else []

    def encoder_flags(self):
        """The embed stage's flags (``flags(EncoderSpec)``) of the job's encoder (wildcard ``encoder``), with the
        weights file it reads filled in, also when it comes from $GENEDML_UNI_WEIGHTS: a different file is a
        different slice, so it re-embeds. Each encoder has its own slice: changing one re-embeds only it."""
        from genedml.tiles.encoders import EncoderSpec

        texts = {name: EncoderSpec.flags({**enc, "weights": self.weights[name]}) for name, enc in self.encoders.items()}
        return lambda wildcards: texts[wildcards.encoder]

    def encoder_weights_input(self, encoder: str) -> list[str]:
        """An encoder's weights file as a rule input (replacing it in place re-embeds that encoder)."""
        return [self.weights[encoder]] if self.weights[encoder] else []

    def embed_runtime(self, encoder: str) -> dict:
        """An encoder's run-time knobs (schema ``x-runtime``): resources of its embed jobs, never params."""
        return self._runtime[encoder]

    def import_mpp(self, sample: str) -> str:
        """``--mpp`` from data.mpp: one µm/px for every section, a mapping sample -> µm/px, or null."""
        mpp = self.config["data"]["mpp"]
        if isinstance(mpp, dict):
            mpp = mpp.get(sample)
        return f"--mpp {float(mpp)}" if mpp else ""

    # --- heads -------------------------------------------------------------------------------------
    def settings(self, head: str) -> dict:
        """A head's resolved settings (its size, preset and variant applied)."""
        return self.resolved[head]

    def gene_semantics_file(self, head: str) -> str:
        """The gene-embedding file a head reads ('' for heads that need none, decided from its resolved
        settings: a variant without gene texts needs none); a head's own setting wins."""
        cfg = self.heads[head]
        if cfg["type"] not in SEMANTIC_HEAD_TYPES:
            return ""
        s = self.settings(head)
        if not s.get("knowledge_path", True) or s["gene_queries"] != "semantic" or s.get("gene_text") != "file":
            return ""
        return s.get("gene_embeddings") or GENE_SEMANTICS

    def needs_spot_images(self, head: str) -> bool:
        """Whether the head trains an image encoder on the spot images (rule spot_images makes them)."""
        from genedml.heads import head_class

        return head_class(self.heads[head]["type"]).needs_spot_images(self.settings(head))

    def spot_image_inputs(self, head: str, samples=None) -> list[str]:
        """The spot-image stores a head's jobs read (none for a head with a frozen spot branch)."""
        return [self.spot_images_path(s) for s in (samples or self.samples)] if self.needs_spot_images(head) else []

    def spot_image_stores(self) -> list[str]:
        """Every spot-image store some head of the run reads."""
        return [self.spot_images_path(s) for s in self.samples] if any(map(self.needs_spot_images, self.heads)) else []

    def spot_encoder_weights(self, head: str) -> list[str]:
        """The spot encoder's weights file of a head, as a rule input (replacing it in place retrains)."""
        path = self.settings(head).get("spot_encoder_weights") if self.needs_spot_images(head) else None
        return [path] if path else []

    def spot_image_flag(self, head: str) -> str:
        """The train step's ``--spot-images`` argument for a head ('' when it reads none)."""
        if not self.needs_spot_images(head):
            return ""
        return shlex.join(["--spot-images", *self.sample_pairs("spot_images")])

    def head_params(self, head: str) -> str:
        """The head's config as JSON, without ``report`` (how the report shows a head never retrains it)."""
        cfg = {k: v for k, v in self.heads[head].items() if k != "report"}
        if self.gene_semantics_file(head):
            cfg["gene_embeddings"] = self.gene_semantics_file(head)
        return json.dumps(cfg, sort_keys=True)

    def _predict_plan(self) -> tuple[list[str], str | None, list[str]]:
        """The config's ``predict`` section: (samples, their HEST-layout folder, heads to apply)."""
        import pandas as pd

        cfg = self.config.get("predict") or {}
        samples = cfg.get("samples") or []
        if isinstance(samples, str):
            samples = pd.read_csv(samples, sep="\t", dtype=str)["sample"].tolist()
        samples = [str(s) for s in samples]
        if samples and not cfg.get("hest_dir"):
            raise ValueError("config predict.samples is set but predict.hest_dir is not")
        clash = sorted(set(samples) & set(self.samples))
        if clash:
            raise ValueError(f"predict.samples {clash} are also training samples; give new sections other ids")
        use = select_names(list(cfg.get("heads") or self.heads_without_controls()), self.run_heads, "predict.heads")
        return samples, cfg.get("hest_dir"), use

    def _slides_plan(self) -> tuple[dict[str, dict], list[str]]:
        """The config's ``slides``: {sample: {"slide": path, "mpp": float | None}} and the heads to apply."""
        from genedml.io.sample_sheet import check_sheet_values

        cfg = self.config.get("slides") or {}
        table = cfg.get("list")
        if not table:
            return {}, []
        import pandas as pd

        path = Path(table)
        if not path.is_file():
            raise FileNotFoundError(f"config slides.list: the slides TSV {table} does not exist")
        sheet = pd.read_csv(path, sep="\t", dtype=str, comment="#", encoding="utf-8-sig").fillna("")
        missing = [c for c in ("sample", "slide") if c not in sheet.columns]
        if missing:
            raise ValueError(f"config slides.list {table}: needs columns sample, slide[, mpp]; lacks {missing}")
        check_sheet_values(sheet[["sample"]], table)
        dup = sheet["sample"][sheet["sample"].duplicated()].tolist()
        clash = sorted(set(sheet["sample"]) & (set(self.samples) | set(self.predict_samples)))
        if dup or clash:
            raise ValueError(f"config slides.list {table}: sample ids used twice: {sorted(set(dup)) or clash}")
        slides = {}
        for row in sheet.itertuples():
            if not Path(row.slide).exists():
                raise FileNotFoundError(f"config slides.list {table}: slide {row.slide} of {row.sample} does not exist")
            mpp = getattr(row, "mpp", "") or None
            try:
                mpp = None if mpp is None else float(mpp)
            except ValueError:
                raise ValueError(f"config slides.list {table}: mpp of {row.sample} is {mpp!r}, not a number") from None
            if mpp is not None and not mpp > 0:
                raise ValueError(f"config slides.list {table}: mpp of {row.sample} must be > 0, not {mpp}")
            slides[row.sample] = {"slide": row.slide, "mpp": mpp}
        use = select_names(list(cfg.get("heads") or self.heads_without_controls()), self.run_heads, "slides.heads")
        return slides, use

    def slide_mpp_flag(self, sample: str) -> str:
        mpp = self.slides[sample]["mpp"]
        return f"--mpp {float(mpp)}" if mpp else ""

    def training_metadata(self) -> str:
        """One training sample's metadata: what rule virtual_spots takes the run's spot lattice from."""
        return self.sample_files(self.samples[0])["metadata"]

    def unlabelled(self) -> dict:
        """Sections predicted without counts, for the report: {sample: {"heads": [...], "slide": bool}}."""
        out = {s: {"heads": list(self.predict_heads), "slide": False} for s in self.predict_samples}
        out.update({s: {"heads": list(self.slide_heads), "slide": True} for s in self.slide_samples})
        return out

    def unlabelled_outputs(self) -> list[str]:
        """What the report shows of them: OOD summaries, and each slide's QC image and maps."""
        files = [f"{OOD_DIR}/{s}.json" for s in self.unlabelled()]
        files += [f"{SLIDES_DIR}/qc/{s}.png" for s in self.slide_samples]
        files += [f"{SLIDES_DIR}/maps/{h}/{s}.png" for s in self.slide_samples for h in self.slide_heads]
        return files

    @staticmethod
    def ood_table(sample: str) -> str:
        """The OOD score table of a section predicted without counts (slides and predict samples)."""
        return f"{OOD_DIR}/{sample}.tsv"

    # --- what each stage is handed ---------------------------------------------------------------
    def flags(self, *spec_classes):
        """The stages' slices of the config as the flags their CLI subcommand reads (generated from the
        schema), for a rule's ``params``. Returned as a function of the wildcards: Snakemake would read braces
        in a plain string (a template ``{symbol}``, a JSON mapping) as wildcards. It runs once per job, and
        Snakemake compares what it returns with the last run's, so a job reruns exactly when its slice
        changes."""
        text = " ".join(spec.flags(self.section(spec.section)) for spec in spec_classes)
        return lambda wildcards: text

    def section(self, path: str) -> dict:
        """The config at a dotted path (``tiles``, ``slides.tissue``)."""
        node = self.config
        for key in path.split("."):
            node = (node or {}).get(key) or {}
        return node

    def slice(self, spec_class) -> dict:
        """A stage's slice of the config (defaults filled)."""
        return schema.with_defaults(spec_class.section, self.section(spec_class.section), spec_class.keys)

    def report_facts(self) -> str:
        """The config slices the report lists under "Configuration that shaped the results" (JSON)."""
        from genedml.tiles.encoders import EncoderSpec

        facts = {
            "encoder": self.slice(EncoderSpec),
            **(
                {"encoders": [EncoderSpec.from_config(e).to_config() for e in self.encoders.values()]}
                if len(self.encoders) > 1
                else {}
            ),
            **{key: self.config[key] for key in ("tiles", "genes", "targets", "folds", "protocol")},
            "data": self.source,
            "heads": {h: {k: v for k, v in c.items() if k != "report"} for h, c in self.heads.items()},
        }
        return json.dumps(facts, sort_keys=True, default=str)
