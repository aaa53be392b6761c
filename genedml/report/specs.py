"""Which report rows a head gives, as declared under ``heads.<name>.report`` in the config.

Only reads the config (no pandas): the workflow imports it when Snakemake parses the rules, so that a bad
``report:`` key fails at once, naming the head.
"""

from __future__ import annotations

import re

REPORT_KEYS = {"label", "table1", "ablation", "sweep", "published_as"}
PARAM_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")  # a sweep parameter names files (figures/sweep_<param>.png)


def head_report_spec(head: str, cfg: dict) -> dict:
    """Normalise ``heads.<head>.report`` (all keys optional)::

        report:
          label: "Gene-DML (ours)"   # name in tables and figures (default: the head's key)
          table1: true               # a row of Table 1 (default: true unless ablation or sweep is set)
          ablation: "w/o global"     # a row of the ablation table, with this label
          sweep: [k]                 # a point of the sweep over these config keys (value read from the
                                     # head's config), or a mapping {k: 18, lambda: 0.8}
          published_as: "Gene-DML"   # the published model this head reimplements (shown in Table 1)

    Returns ``{label, table1, ablation, sweep: {param: value}, published_as}``; raises ValueError that
    names the head for anything it cannot use.
    """
    rep = cfg.get("report") or {}
    where = f"heads.{head}.report"
    if not isinstance(rep, dict):
        raise ValueError(f"{where} must be a mapping (label, table1, ablation, sweep, published_as)")
    unknown = sorted(set(rep) - REPORT_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(REPORT_KEYS)}")
    sweep = _sweep_values(rep.get("sweep") or {}, cfg, where)
    ablation = rep.get("ablation")
    table1 = rep.get("table1", not (ablation or sweep))
    return {
        "label": str(rep.get("label", head)),
        "table1": bool(table1),
        "ablation": None if ablation in (None, "") else str(ablation),
        "sweep": {str(k): v for k, v in sweep.items()},
        "published_as": rep.get("published_as"),
    }


def _sweep_values(sweep, cfg: dict, where: str) -> dict:
    """``sweep`` as {param: value}: a key or a list of keys takes its value from the head's config."""
    if isinstance(sweep, str):
        sweep = [sweep]
    if isinstance(sweep, list):
        values = {}
        for param in sweep:
            if param not in cfg:
                raise ValueError(
                    f"{where}.sweep names {param!r}, which is not a key of the head's config; "
                    f"give its value instead: sweep: {{{param}: VALUE}}"
                )
            values[param] = cfg[param]
        sweep = values
    if not isinstance(sweep, dict):
        raise ValueError(f"{where}.sweep must be a config key, a list of keys or a mapping key: value")
    for param, value in sweep.items():
        if not PARAM_NAME.match(str(param)):
            raise ValueError(f"{where}.sweep: parameter name {param!r} may only use letters, digits, _ . -")
        if not isinstance(value, (int, float, str, bool)):
            raise ValueError(f"{where}.sweep: value of {param!r} must be a number or a string, got {value!r}")
    return sweep


def report_specs(heads: dict) -> dict:
    """head -> its report spec plus its ``type``, for every head of the config."""
    return {name: {**head_report_spec(name, cfg), "type": cfg.get("type", name)} for name, cfg in heads.items()}


def sweep_params(specs: dict) -> list[str]:
    """The parameters any head sweeps over, sorted."""
    return sorted({p for s in specs.values() for p in s["sweep"]})
