"""What every prediction head implements, and the per-section data it is given.

A head is fitted per fold on training sections (model selection on the validation sections), then
predicts held-out sections. Sections are passed whole, so heads that need a section's global context
(all spots and their array coordinates) have it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genedml.pipeline import schema
from genedml.tiles.features import SampleFeatures


@dataclass
class Section:
    sample: str
    patient: str
    features: SampleFeatures
    targets: np.ndarray | None  # (N, G) float32; None for slides without counts
    genes: list[str]

    @property
    def n_spots(self) -> int:
        return self.features.n_spots


def section_settings(kind: str, section: dict | None) -> dict:
    """A head's config section without the keys that are not settings: ``type`` (which must be the head's
    own) and ``report`` (how the report shows the head)."""
    section = dict(section or {})
    if section.pop("type", kind) != kind:
        raise ValueError(f"a {kind} head was given a section of another type")
    section.pop("report", None)
    return section


# settings that were replaced: a config that still uses one gets told what replaced it
RENAMED = {"selection": "`protocol: honest | reference` (selection: test_fold is protocol: reference)"}


def renamed_hint(unknown) -> str:
    hints = [f"{key} was replaced by {RENAMED[key]}" for key in unknown if key in RENAMED]
    return f" ({'; '.join(hints)})" if hints else ""


# bounds of the settings several heads share (a value out of range would train nothing, or fail late)
SETTING_BOUNDS = {
    "epochs": (1, None),
    "batch_size": (1, None),
    "eval_batch_size": (1, None),
    "patience": (0, None),
    "log_every": (1, None),
    "step_size": (1, None),
    "lr": (0, None, "exclusive"),
    "weight_decay": (0, None),
    "gamma": (0, 1, "exclusive"),
    "dropout": (0, 1),
    "pca": (0, None),
}


# what may stand where the default is a number / a flag (a list: per-layer sizes such as stnet's hidden)
ACCEPTED = {"integer": {"integer", "array"}, "number": {"integer", "number", "array"}, "boolean": {"boolean"}}


def check_setting_values(kind: str, settings: dict, defaults: dict, given: dict) -> None:
    """The numbers and flags a config gave (``given``) have their defaults' types (``ACCEPTED``: "ten" or 3.5
    epochs is an error, not a late traceback) and lie within ``SETTING_BOUNDS``. Strings and lists are left to
    each head's own checks of its choices."""
    for key, value in given.items():
        default = defaults.get(key)
        want, have = schema.json_type(default), schema.json_type(value)
        if default is not None and value is not None and want in ACCEPTED and have not in ACCEPTED[want]:
            article = "an" if want[0] in "aeiou" else "a"
            raise ValueError(f"{kind} {key} must be {article} {want} (like its default {default!r}), not {value!r}")
    for key, (lo, hi, *how) in SETTING_BOUNDS.items():
        value = settings.get(key)
        if key not in settings or value is None:
            continue
        if schema.json_type(value) not in ("integer", "number"):
            raise ValueError(f"{kind} {key} must be a number, not {value!r}")
        exclusive = bool(how)
        low_bad = lo is not None and (value <= lo if exclusive else value < lo)
        high_bad = hi is not None and (value >= hi if exclusive else value > hi)
        if low_bad or high_bad:
            span = f"{'>' if exclusive else '>='} {lo}" + (
                f" and {'<' if exclusive else '<='} {hi}" if hi is not None else ""
            )
            raise ValueError(f"{kind} {key} must be {span}, not {value!r}")


def read_array_model(directory: Path, kind: str, arrays_name: str, facts_name: str, fmt: str, required) -> tuple:
    """A model saved as plain arrays (``.npz``, loaded without pickle) and a JSON description: (facts, arrays).

    Every problem is an InputError naming the file: either file missing, an unreadable or foreign description
    (``format`` is not ``fmt``), a description lacking a ``required`` key, an unreadable array file."""
    import json
    import zipfile

    from genedml.errors import InputError

    arrays_path, facts_path = Path(directory) / arrays_name, Path(directory) / facts_name
    for path in (arrays_path, facts_path):
        if not path.is_file():
            raise InputError(f"the {kind} model file is missing (rerun the train step)", None, path)
    try:
        facts = json.loads(facts_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"not a readable {kind} model description ({e})", None, facts_path) from e
    if not isinstance(facts, dict) or facts.get("format") != fmt:
        raise InputError(f"not a genedml {kind} model description (format is not {fmt!r})", None, facts_path)
    missing = [k for k in required if k not in facts]
    if missing:
        raise InputError(f"the {kind} model description lacks {missing}", None, facts_path)
    try:
        with np.load(arrays_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"not a readable {kind} model array file ({e})", None, arrays_path) from e
    return facts, arrays


class Head:
    """Base class. Subclasses set ``kind`` and ``defaults`` and implement fit / predict / save / load.

    A head is the spec of its own settings: ``defaults`` lists every setting it reads with its default (the
    one place they are written; a head's keys depend on its type, so the config schema checks only ``type``
    and ``report``), and ``settings`` resolves a config section against them.
    """

    kind = "base"
    defaults: dict = {}
    # settings of every head: the seed of its training, and its protocol (the run's unless the head sets one)
    COMMON = {"seed": 0, "protocol": schema.part("protocol")["default"]}

    def __init__(self, params: dict, seed: int = 0):
        self.params = self.checked_settings(params)
        self.seed = int(seed)

    @classmethod
    def checked_settings(cls, params: dict | None) -> dict:
        """``settings`` with every given value checked against its default's type and the shared bounds."""
        resolved = cls.settings(params)
        defaults = cls.settings({"type": cls.kind, **({"size": params["size"]} if params and "size" in params else {})})
        check_setting_values(cls.kind, resolved, defaults, section_settings(cls.kind, params))
        return resolved

    @classmethod
    def known_settings(cls) -> dict:
        return {**cls.COMMON, **cls.defaults}

    @classmethod
    def settings(cls, params: dict | None) -> dict:
        """The head's settings: its defaults under ``params``; a key it does not know is an error."""
        params = section_settings(cls.kind, params)
        known = cls.known_settings()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(
                f"{cls.kind}: unknown setting(s) {unknown}; known: {', '.join(sorted(known))}{renamed_hint(unknown)}"
            )
        return {**copy.deepcopy(known), **params}

    @classmethod
    def needs_spot_images(cls, settings: dict) -> bool:
        """Whether the head with these resolved settings reads the spot images (a trainable image encoder)."""
        return settings.get("spot_encoder", "frozen") != "frozen"

    def fit(self, train: list[Section], val: list[Section]) -> dict:
        """Train; return facts for the log (chosen hyper-parameters, validation scores, timings).

        ``val`` are the sections every model-selection decision is made on. Which sections those are is the
        protocol's (``genedml.heads.train``): under ``reference`` they are the test fold, so a head must never
        train on them (``params["protocol"]`` says which).
        """
        raise NotImplementedError

    def predict(self, section: Section) -> np.ndarray:
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, params: dict) -> Head:
        raise NotImplementedError


def neighbour_mean(f: SampleFeatures, block: int = 4096) -> np.ndarray:
    """Mean of the in-image neighbour tile embeddings per spot, a block of spots at a time: the neighbours
    of lazy features (``load_features(lazy=True)``) are never read whole (each row's mean is the same)."""
    n, _, d = f.neighbour.shape
    out = np.empty((n, d), np.float32)
    for lo in range(0, n, block):
        part = slice(lo, min(lo + block, n))
        m = f.neighbour_mask[part, :, None].astype(np.float32)
        out[part] = (np.asarray(f.neighbour[part], dtype=np.float32) * m).sum(1) / np.maximum(m.sum(1), 1.0)
    return out


def global_mean(f: SampleFeatures) -> np.ndarray:
    """The section's mean local embedding, repeated for every spot."""
    return np.repeat(f.local.mean(0, keepdims=True), f.n_spots, axis=0)


FEATURE_VIEWS = {
    "local": lambda f: f.local,
    "neighbour_mean": neighbour_mean,
    "global_mean": global_mean,
}


def spot_features(f: SampleFeatures, views: list[str]) -> np.ndarray:
    unknown = [v for v in views if v not in FEATURE_VIEWS]
    if unknown:
        raise ValueError(f"unknown feature view(s) {unknown}; choose from {sorted(FEATURE_VIEWS)}")
    return np.concatenate([FEATURE_VIEWS[v](f) for v in views], axis=1).astype(np.float32)
