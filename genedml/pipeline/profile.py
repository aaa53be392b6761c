"""Install the project's SLURM profile as a user's named Snakemake profile (``snakemake --profile cluster``).

``genedml profile install cluster --partition P --account A`` copies ``workflow/profiles/slurm`` to
``~/.config/snakemake/cluster`` (where Snakemake looks for a profile given by name; $XDG_CONFIG_HOME is
honoured) and fills in the site settings the profile leaves to the user: partition, account, the GPU
partition and which of the two GPU request forms the cluster understands. An existing profile is never
replaced unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import yaml

from genedml.atomic import atomic_path

SOURCE = Path(__file__).resolve().parents[2] / "workflow" / "profiles" / "slurm"
# SLURM names of partitions and accounts: letters, digits and a few separators; nothing a shell could read
SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
GPU_FORMS = ("gpus", "gres")


class ProfileError(Exception):
    """The profile cannot be installed as asked; the message says why and what to do."""


def user_profile_dir() -> Path:
    """The folder Snakemake searches for profiles given by name (the same rule as Snakemake's own)."""
    try:
        from snakemake.common import get_appdirs

        return Path(get_appdirs().user_config_dir)
    except ImportError:  # pragma: no cover - snakemake is a dependency; platformdirs comes with it
        from platformdirs import AppDirs

        return Path(AppDirs("snakemake", "snakemake").user_config_dir)


def _check_name(kind: str, value: str | None) -> None:
    if value is not None and not SLURM_NAME.match(value):
        raise ProfileError(f"{kind} {value!r} is not a SLURM name (letters, digits, '_', '.', '+', '-')")


def _set_commented(text: str, key: str, value: str, section: str) -> str:
    """Activate the commented ``# key: "..."`` line of a profile section with ``value``."""
    pattern = re.compile(rf'^(?P<indent>[ ]+)# {re.escape(key)}: "[^"\n]*"(?P<rest>[^\n]*)$', re.M)
    start = text.index(f"\n{section}:\n")
    end = re.compile(r"^\S", re.M).search(text, start + len(section) + 3)
    end = end.start() if end else len(text)
    match = pattern.search(text, start, end)
    if match is None:
        raise ProfileError(f"the source profile has no commented `{key}` line under `{section}:`")
    line = f'{match["indent"]}{key}: "{value}"{match["rest"]}'
    return text[: match.start()] + line + text[match.end() :]


def render_profile(
    text: str,
    partition: str | None = None,
    account: str | None = None,
    gpu_partition: str | None = None,
    gpu_form: str = "gpus",
    source: Path | None = None,
) -> str:
    """The profile's config.yaml with the site settings filled in."""
    for kind, value in (("partition", partition), ("account", account), ("GPU partition", gpu_partition)):
        _check_name(kind, value)
    if gpu_form not in GPU_FORMS:
        raise ProfileError(f"GPU request form {gpu_form!r}: choose one of {', '.join(GPU_FORMS)}")
    if partition:
        text = _set_commented(text, "slurm_partition", partition, "default-resources")
    if account:
        text = _set_commented(text, "slurm_account", account, "default-resources")
    if gpu_partition:
        text = _set_commented(text, "slurm_partition", gpu_partition, "set-resources")
    if gpu_form == "gres":
        gpu_line = re.compile(r"^(?P<indent>[ ]+)gpu: 1(?P<rest>[^\n]*)$", re.M)
        match = gpu_line.search(text)
        if match is None:
            raise ProfileError("the source profile has no `gpu: 1` line for the embed rule")
        text = text[: match.start()] + f"{match['indent']}# gpu: 1{match['rest']}" + text[match.end() :]
        text = _set_commented(text, "gres", "gpu:1", "set-resources")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = f"# Installed by `genedml profile install` from {source or SOURCE} on {stamp}.\n"
    rendered = header + text
    _verify(rendered, partition, account, gpu_partition, gpu_form)
    return rendered


def _verify(text: str, partition, account, gpu_partition, gpu_form) -> None:
    """The written YAML must say what was asked, and ask for a GPU in exactly one form."""
    data = yaml.safe_load(text)
    defaults = data.get("default-resources") or {}
    embed = (data.get("set-resources") or {}).get("embed") or {}
    wrong = []
    if partition is not None and defaults.get("slurm_partition") != partition:
        wrong.append(f"partition {defaults.get('slurm_partition')!r}")
    if account is not None and defaults.get("slurm_account") != account:
        wrong.append(f"account {defaults.get('slurm_account')!r}")
    if gpu_partition is not None and embed.get("slurm_partition") != gpu_partition:
        wrong.append(f"GPU partition {embed.get('slurm_partition')!r}")
    if ("gpu" in embed) == ("gres" in embed) or ("gres" in embed) != (gpu_form == "gres"):
        wrong.append(f"embed GPU request {embed}")
    if wrong:
        raise ProfileError("the rendered profile came out wrong: " + "; ".join(wrong))


def install_profile(
    name: str,
    partition: str | None = None,
    account: str | None = None,
    gpu_partition: str | None = None,
    gpu_form: str = "gpus",
    force: bool = False,
    config_dir: Path | None = None,
    source: Path = SOURCE,
) -> Path:
    """Copy the SLURM profile to ``config_dir/name`` with the site settings filled in; return the folder."""
    if not name or "/" in name or name in (".", ".."):
        raise ProfileError(f"profile name {name!r}: give a plain name such as 'cluster'")
    source = Path(source)
    if not (source / "config.yaml").is_file():
        raise ProfileError(
            f"no SLURM profile at {source} (expected {source / 'config.yaml'}); "
            "run from a genedml checkout or pass --source"
        )
    dest = Path(config_dir or user_profile_dir()) / name
    if dest.exists() and not force:
        raise ProfileError(f"{dest} already exists; not replacing it (use --force to overwrite)")
    text = render_profile((source / "config.yaml").read_text(), partition, account, gpu_partition, gpu_form, source)
    # build the whole folder beside its final place, then rename: never a half-written profile
    with atomic_path(dest, overwrite=force) as tmp:
        shutil.copytree(source, tmp)
        (tmp / "config.yaml").write_text(text)
    return dest


def cmd_install(a) -> None:
    try:
        dest = install_profile(
            a.name,
            a.partition,
            a.account,
            a.gpu_partition,
            a.gpu_form,
            a.force,
            Path(a.config_dir) if a.config_dir else None,
            Path(a.source),
        )
    except ProfileError as exc:
        raise SystemExit(f"genedml profile install: error: {exc}") from None
    where = f"--profile {a.name}" if not a.config_dir else f"--profile {dest}"
    print(f"SLURM profile written to {dest}\nRun the pipeline with:  snakemake {where}")


def add_profile_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "install",
        help="install the SLURM profile as your named Snakemake profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("name", help="profile name, e.g. 'cluster' (then: snakemake --profile cluster)")
    s.add_argument("--partition", help="SLURM partition for every job (default: the cluster's default)")
    s.add_argument("--account", help="SLURM account to charge (default: none)")
    s.add_argument("--gpu-partition", help="partition for the GPU step (embed), if GPUs have their own")
    s.add_argument(
        "--gpu-form",
        choices=GPU_FORMS,
        default="gpus",
        help="how the embed job asks for its GPU: 'gpus' = sbatch --gpus=1 (default), "
        "'gres' = sbatch --gres=gpu:1 (clusters without GPU TRES)",
    )
    s.add_argument("--config-dir", help=f"where profiles live (default: {user_profile_dir()})")
    s.add_argument("--source", default=str(SOURCE), help="the profile folder to copy (default: %(default)s)")
    s.add_argument("--force", action="store_true", help="replace an existing profile of that name")
    s.set_defaults(func=cmd_install)
