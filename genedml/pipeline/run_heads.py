"""The run's heads: every configured head once per encoder, protocol and seed, plus the controls.

A config names heads (``heads``), encoders (``encoders``, or the one ``encoder``) and controls
(``controls``). What is trained and evaluated is a *run head*: one head on one encoder's features under one
protocol with one seed. Each has a key that names its files (``results/heads/{key}/``, ``results/metrics/{key}/``)
and the ``head`` wildcard of the rules. A key is the head's name, then, joined with ``@``, only the parts
that vary for that head: the encoder when the run has more than one, the protocol when the head runs under
both (``protocol: [honest, reference]``), ``seed{n}`` when it has several (``seeds: [0, 1, 2]``)::

    ridge                      one encoder, one protocol, one seed (the keys of earlier genedml runs)
    ridge@uni                  two encoders: every key names its encoder
    stnet@uni@reference        ... and stnet under both protocols
    bleep@resnet50@seed1       ... and bleep with several seeds

Head and encoder names never hold ``@`` (the schema's patterns), so a key is never ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# the controls (config `controls`): floors every table shows beside the heads, trained per encoder. Their
# settings are written here once; they are the run's floors, not heads a user tunes.
CONTROL_RIDGE = {"type": "ridge", "alphas": [1, 10, 100, 1000, 10000], "pca": 64, "features": ["local"], "seed": 0}
CONTROL_HEADS = {
    "mean": {"type": "mean", "seed": 0},
    "shuffled": {**CONTROL_RIDGE, "shuffle_features": True},
    "ridge": dict(CONTROL_RIDGE),
}
CONTROL_LABELS = {
    "mean": "mean predictor (control)",
    "shuffled": "shuffled-feature null (control)",
    "ridge": "ridge on the local embedding (control)",
}
CONTROL_PREFIX = "control_"
# settings of a head's config section that say which run heads it makes, never passed to the head itself
EXPANSION_KEYS = ("seeds", "encoders")


@dataclass(frozen=True)
class RunHead:
    key: str
    head: str  # the configured head's name (or control_<name>)
    type: str
    encoder: str
    protocol: str
    seed: int
    control: str | None  # mean | shuffled | ridge for a control, else None
    config: dict = field(hash=False)  # the head's section for this run head: one protocol, one seed

    def facts(self) -> dict:
        """What the comparison and the report need to know of the run head (JSON-able)."""
        return {
            "head": self.head,
            "type": self.type,
            "encoder": self.encoder,
            "protocol": self.protocol,
            "seed": self.seed,
            "control": self.control,
        }


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def expand_heads(heads: dict, encoders: list[str], protocol: str, controls: list[str]) -> dict[str, RunHead]:
    """Every run head of ``heads`` (name -> config section, already restricted to ``run_heads``) on
    ``encoders`` under the run's default ``protocol``, then the ``controls`` on every encoder, by key.

    Raises ValueError naming the head for a head that names an encoder the run does not have, and for a
    head name that clashes with a control's."""
    out: dict[str, RunHead] = {}
    many_encoders = len(encoders) > 1
    for name, cfg in heads.items():
        if name.startswith(CONTROL_PREFIX) and name[len(CONTROL_PREFIX) :] in CONTROL_HEADS:
            raise ValueError(f"config heads.{name}: the name is a control's; controls are set by `controls`")
        use = list(cfg.get("encoders") or encoders)
        unknown = [e for e in use if e not in encoders]
        if unknown:
            raise ValueError(
                f"config heads.{name}.encoders names {unknown}, which the run does not embed with "
                f"({', '.join(encoders)})"
            )
        protocols = _as_list(cfg.get("protocol") or protocol)
        seeds = [int(s) for s in (cfg.get("seeds") or [cfg.get("seed", 0)])]
        base = {k: v for k, v in cfg.items() if k not in EXPANSION_KEYS}
        for enc in use:
            for proto in protocols:
                for seed in seeds:
                    parts = [name]
                    if many_encoders:
                        parts.append(enc)
                    if len(protocols) > 1:
                        parts.append(proto)
                    if len(seeds) > 1:
                        parts.append(f"seed{seed}")
                    key = "@".join(parts)
                    section = {**base, "protocol": proto, "seed": seed}
                    out[key] = RunHead(key, name, cfg["type"], enc, proto, seed, None, section)
    for control in controls:
        if control not in CONTROL_HEADS:
            raise ValueError(f"config controls: unknown control {control!r}; choose from {', '.join(CONTROL_HEADS)}")
        name = CONTROL_PREFIX + control
        for enc in encoders:
            key = f"{name}@{enc}" if many_encoders else name
            section = {**CONTROL_HEADS[control], "protocol": protocol}
            section["report"] = {"label": CONTROL_LABELS[control]}
            out[key] = RunHead(key, name, section["type"], enc, protocol, int(section["seed"]), control, section)
    return out


def key_label(run_head: RunHead, base_label: str, many_encoders: bool) -> str:
    """The run head's name in tables and figures: its head's label, then what sets it apart."""
    parts = [base_label]
    if many_encoders:
        parts.append(run_head.encoder)
    key_parts = run_head.key.split("@")
    if run_head.protocol in key_parts[1:]:
        parts.append(run_head.protocol)
    if f"seed{run_head.seed}" in key_parts[1:]:
        parts.append(f"seed {run_head.seed}")
    return " · ".join(parts)


def select_names(names: list[str], run_heads: dict[str, RunHead], where: str) -> list[str]:
    """The run heads a list names (``predict.heads``, ``slides.heads``): a key names itself, a head's name
    every run head of that head. Raises ValueError naming ``where`` for a name that is neither."""
    out = []
    for name in names:
        if name in run_heads:
            out.append(name)
            continue
        keys = [k for k, r in run_heads.items() if r.head == name]
        if not keys:
            raise ValueError(
                f"config {where} names {name!r}, which is not a head of this config ({', '.join(run_heads)})"
            )
        out.extend(keys)
    return list(dict.fromkeys(out))
