"""Checks of a config that must fail when a run starts, not hours later in the job that reads the setting.

The schema checks types and allowed values; these check what a schema cannot: that every file a setting
names exists (a mistyped path after an earlier run would otherwise leave Snakemake with the old outputs and
no error), and that the encoder is one genedml or timm can build.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from genedml.tiles.encoder_zoo import ZOO

# the config's settings that name a file (or folder) a stage reads: key path -> what it is
FILE_SETTINGS = {
    "encoder.weights": "encoder weights file",
    "genes.list": "gene list file",
    "folds.table": "fold table",
    "gene_semantics.descriptions": "gene descriptions TSV",
    "gene_semantics.embeddings": "gene embeddings file",
    "gene_semantics.embedding_genes": "gene names of the gene embeddings",
    "data.hest_dir": "HEST-1k folder",
    "data.legacy_st_dir": "legacy-ST folder",
}
# a head's settings that name a file it reads
HEAD_FILE_SETTINGS = {
    "spot_encoder_weights": "spot encoder weights file",
    "gene_embeddings": "gene embeddings file",
}
UNI_WEIGHTS_VARIABLE = "GENEDML_UNI_WEIGHTS"


def _get(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def is_builtin_gene_list(value: str) -> bool:
    return value.startswith("genedml:")


def missing_files(config: dict, heads: dict[str, dict]) -> list[str]:
    """One line per file-naming setting whose file does not exist (config key, what it is, the path)."""
    problems = []
    for key, what in FILE_SETTINGS.items():
        value = _get(config, key)
        if not value or (key == "genes.list" and is_builtin_gene_list(str(value))):
            continue
        if not Path(value).exists():
            problems.append(f"config {key}: the {what} {value} does not exist")
    model = _get(config, "gene_semantics.model")
    if model and model != "minilm" and not Path(model).exists():
        problems.append(f"config gene_semantics.model: the sentence-transformers folder {model} does not exist")
    weights = encoder_weights(config)
    if weights and not _get(config, "encoder.weights") and not Path(weights).is_file():
        name = config["encoder"]["name"]
        problems.append(f"${ZOO[name].env_var} names the {name} weights file {weights}, which does not exist")
    for name, settings in heads.items():
        for key, what in HEAD_FILE_SETTINGS.items():
            value = settings.get(key)
            if value and not Path(value).exists():
                problems.append(f"config heads.{name}.{key}: the {what} {value} does not exist")
    return problems


def encoder_weights(config: dict) -> str | None:
    """The weights file the embed step reads: ``encoder.weights``, else (a zoo encoder) its card's environment
    variable ($GENEDML_UNI_WEIGHTS for uni)."""
    encoder = config["encoder"]
    if encoder.get("weights"):
        return encoder["weights"]
    if encoder["name"] in ZOO:
        return os.environ.get(ZOO[encoder["name"]].env_var) or None
    return None


def timm_architectures(cache_dir: str | os.PathLike = ".snakemake/genedml") -> set[str]:
    """Every architecture name timm knows. Importing timm takes seconds, so the names are kept in
    ``cache_dir`` (in Snakemake's own folder of the working directory) per timm version, and later dry runs
    read them from there; without a writable folder timm is asked each time."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        cache = Path(cache_dir) / f"timm-{version('timm')}-architectures.txt"
    except PackageNotFoundError:
        cache = None
    if cache is not None and cache.is_file():
        names = set(cache.read_text().split())
        if names:
            return names
    from genedml.compat import import_timm

    names = set(import_timm().list_models())
    if cache is not None:
        try:
            from genedml.atomic import write_text

            write_text(cache, "\n".join(sorted(names)) + "\n")
        except OSError:
            pass
    return names


def check_encoder(config: dict, features_dir: str | os.PathLike | None = None) -> None:
    """The encoder is a name of genedml's registry or an architecture timm knows.

    Asking timm means importing it (seconds, on every dry run), so the question is skipped when the run's
    feature folder of this encoder (``features_dir``) already holds a store: an earlier run built it."""
    from genedml.tiles.encoder_zoo import ZOO
    from genedml.tiles.encoders import REGISTRY

    encoder = config["encoder"]
    card = ZOO.get(encoder["name"])
    if card is not None and not encoder.get("allow_random_init") and not encoder_weights(config):
        # fail when the run starts, not in every embed job
        raise FileNotFoundError(f"config encoder {encoder['name']!r} has no weights file. " + card.help())
    if encoder["name"] in REGISTRY and not encoder.get("timm_name"):
        return
    if features_dir is not None and any(Path(features_dir).glob("*.zarr")):
        return
    arch = encoder.get("timm_name") or encoder["name"]
    names = timm_architectures()
    if arch.split(".")[0] not in names:  # a pretrained tag after the dot names weights, not an architecture
        import difflib

        close = difflib.get_close_matches(arch, sorted(names), n=5, cutoff=0.8)
        key = "encoder.timm_name" if encoder.get("timm_name") else "encoder.name"
        hint = f"; timm names like it: {', '.join(close)}" if close else ""
        raise ValueError(
            f"config {key}: {arch!r} is neither one of genedml's encoders ({', '.join(sorted(REGISTRY))}) "
            f"nor a timm architecture{hint}"
        )


def check_config(config: dict, heads: dict[str, dict], features_dir: str | None = None) -> None:
    """Every check of this module; one error listing every problem found."""
    problems = missing_files(config, heads)
    if problems:
        raise FileNotFoundError("; ".join(problems))
    check_encoder(config, features_dir)


def put_genedml_on_path() -> None:
    """Jobs run the ``genedml`` command beside the Python that plans the run (``sys.executable``: the package
    the Snakefile imports), also when its environment was not activated: put that folder first on PATH, which
    the jobs inherit. With neither there nor on PATH, fail now with one line instead of exit status 127 in
    every job."""
    folder = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(folder, "genedml")):
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
    elif shutil.which("genedml") is None:
        raise RuntimeError(
            f"the `genedml` command is neither beside {sys.executable} nor on PATH: activate genedml's environment "
            "(. .venv/bin/activate) or install it (make install)"
        )
