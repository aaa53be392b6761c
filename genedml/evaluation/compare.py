"""Honest comparisons of a run's heads: intervals, the encoder x head matrix, the optimism gap, paired
tests, seed spread and the controls' floors (docs/statistics.md says what each number is).

Input: the metrics folders ``{results_dir}/{key}/`` that ``genedml evaluate`` writes (``per_section.tsv``
and ``per_gene.tsv`` are read), the sample sheet (sample -> patient: the bootstrap resamples patients) and
the run's keys, a mapping ``{key: {"head", "type", "encoder", "protocol", "seed", "control", "label"}}``
(``head``, ``encoder`` and ``protocol`` are required; ``seed`` defaults to 0, ``control`` to null, ``type``
to ``head`` and ``label`` to the key). Keys sharing (head, encoder, protocol) are seed replicates of one
*group*; keys sharing (head, encoder, seed) under both protocols form an optimism-gap pair.

Seed replicates are averaged per section (and per gene) before a group is compared with another: a
group's value of a section is the NaN-aware mean of its seeds' values there. A PCC that is undefined (a
prediction constant within a section, as the mean predictor's) stays NaN, is never turned into 0, and is
said so in the ``note`` column. Controls (``control``: ``mean``, ``shuffled``, ``ridge``) are groups like
any other; a control whose encoder is empty, ``none`` or ``-`` serves every encoder.

Tables (``compare``) and files (``write_comparison``): ``intervals.tsv``, ``matrix.tsv`` and
``matrix_pcc_a.png``, ``optimism_gap.tsv``, ``paired_tests.tsv``, ``seeds.tsv``, ``controls.tsv``; the
column lists are the ``*_COLUMNS`` constants below.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genedml.atomic import write_tsv
from genedml.errors import InputError
from genedml.evaluation.stats import (
    LEVEL,
    N_BOOT,
    SEED,
    holm,
    paired_patient_bootstrap,
    patient_bootstrap,
    seed_spread,
    wilcoxon_paired,
)

log = logging.getLogger(__name__)

PROTOCOLS = ("honest", "reference")
CONTROLS = (None, "mean", "shuffled", "ridge")
METRICS = ("PCC_A", "PCC_H", "MSE", "MAE")
PCC_METRICS = ("PCC_A", "PCC_H")
ENCODER_FREE = ("", "none", "-")  # a control with such an encoder serves every encoder
SECTION_COLUMNS = ("fold", "sample", *METRICS)
GENE_COLUMNS = ("gene", "mean_pcc")
UNDEFINED_NOTE = "PCC undefined in every section (constant prediction within a section): NaN, not 0"

GROUP = ["head", "type", "encoder", "protocol", "control"]
INTERVAL_COLUMNS = (
    "key label head type encoder protocol seed control metric estimate ci_low ci_high level n_patients "
    "n_sections n_sections_total n_boot note"
).split()
MATRIX_COLUMNS = (
    "block head type encoder protocol control n_seeds seeds keys estimate ci_low ci_high level n_patients "
    "n_sections n_sections_total n_boot note"
).split()
GAP_COLUMNS = (
    "head type encoder control seeds honest_keys reference_keys metric honest reference gap gap_ci_low "
    "gap_ci_high level n_patients n_sections n_boot wilcoxon_n wilcoxon_W wilcoxon_p wilcoxon_method "
    "effect_r median_diff note"
).split()
PAIR_COLUMNS = (
    "family comparison protocol head_a encoder_a head_b encoder_b metric n n_zero W p_value p_holm method "
    "effect_r median_diff mean_diff better note"
).split()
SEED_COLUMNS = ("head type encoder protocol control metric n_seeds seeds keys n mean sd min max note").split()
CONTROL_COLUMNS = (
    "encoder head type protocol control n_seeds PCC_A MSE mean_MSE shuffled_PCC_A shuffled_MSE "
    "ridge_PCC_A margin_PCC_A margin_ci_low margin_ci_high MSE_minus_mean_MSE mse_ci_low mse_ci_high "
    "level n_patients n_sections n_boot mean_control shuffled_control ridge_control note"
).split()
TABLES = {
    "intervals": INTERVAL_COLUMNS,
    "matrix": MATRIX_COLUMNS,
    "optimism_gap": GAP_COLUMNS,
    "paired_tests": PAIR_COLUMNS,
    "seeds": SEED_COLUMNS,
    "controls": CONTROL_COLUMNS,
}


@dataclass(frozen=True)
class RunKey:
    key: str
    head: str
    type: str
    encoder: str
    protocol: str
    seed: int
    control: str | None
    label: str


@dataclass
class Group:
    """Seed replicates of one (head, encoder, protocol): per-section and per-gene values averaged over seeds."""

    head: str
    type: str
    encoder: str
    protocol: str
    control: str | None
    keys: list[str]
    seeds: list[int]
    sections: pd.DataFrame  # index sample; columns patient, METRICS (seed means)
    genes: pd.Series  # index gene; mean_pcc (seed mean)
    notes: list[str] = field(default_factory=list)

    @property
    def encoder_free(self) -> bool:
        return self.encoder.strip().lower() in ENCODER_FREE

    def ids(self) -> dict:
        return {
            "head": self.head,
            "type": self.type,
            "encoder": self.encoder,
            "protocol": self.protocol,
            "control": self.control,
        }

    def seeds_text(self) -> str:
        return ",".join(str(s) for s in self.seeds)


def parse_keys(keys: dict) -> list[RunKey]:
    """The run's key mapping as ``RunKey``s; a missing field, an unknown protocol or control is a
    ``ValueError`` naming the key."""
    if not isinstance(keys, dict) or not keys:
        raise ValueError("keys: expected a non-empty mapping {key: {head, encoder, protocol, ...}}")
    out = []
    for key, spec in keys.items():
        if not isinstance(spec, dict):
            raise ValueError(f"key {key!r}: expected a mapping, got {type(spec).__name__}")
        missing = [f for f in ("head", "encoder", "protocol") if f not in spec]
        if missing:
            raise ValueError(f"key {key!r}: lacks {', '.join(missing)}")
        if spec["protocol"] not in PROTOCOLS:
            raise ValueError(f"key {key!r}: protocol must be one of {', '.join(PROTOCOLS)}, not {spec['protocol']!r}")
        control = spec.get("control")
        if control not in CONTROLS:
            raise ValueError(f"key {key!r}: control must be null, mean, shuffled or ridge, not {control!r}")
        try:
            seed = int(spec.get("seed", 0) if spec.get("seed") is not None else 0)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"key {key!r}: seed must be an integer, not {spec.get('seed')!r}") from exc
        out.append(
            RunKey(
                key=str(key),
                head=str(spec["head"]),
                type=str(spec.get("type") or spec["head"]),
                encoder="" if spec["encoder"] is None else str(spec["encoder"]),
                protocol=spec["protocol"],
                seed=seed,
                control=control,
                label=str(spec.get("label") or key),
            )
        )
    return out


def _read(path: Path, key: str, columns) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"run head {key!r}: metrics file missing", None, path)
    try:
        table = pd.read_csv(path, sep="\t")
    except Exception as exc:  # empty, binary, ragged: pandas raises several kinds
        raise InputError(f"run head {key!r}: metrics file cannot be read as TSV ({exc})", None, path) from exc
    lacking = [c for c in columns if c not in table.columns]
    if lacking:
        raise InputError(f"run head {key!r}: metrics file lacks column(s) {', '.join(lacking)}", None, path)
    if table.empty:
        raise InputError(f"run head {key!r}: metrics file has no rows", None, path)
    numeric = [c for c in columns if c not in ("sample", "gene", "fold")]
    for c in numeric:
        values = pd.to_numeric(table[c], errors="coerce")
        if (values.isna() & table[c].notna()).any():
            raise InputError(f"run head {key!r}: column {c} holds non-numeric values", None, path)
        table[c] = values.astype(float)
    return table


def metrics_folder(results_dir, key: str) -> Path:
    """``{results_dir}/{key}/``; given the run's ``results/`` instead of ``results/metrics/``, the folder
    under ``metrics/`` (``{results_dir}/metrics/{key}/``)."""
    root = Path(results_dir)
    if not (root / key).is_dir() and (root / "metrics").is_dir():
        return root / "metrics" / key
    return root / key


def load_key(results_dir, key: str, patients: dict) -> tuple[pd.DataFrame, pd.Series]:
    """One key's per-section metrics (index sample; patient, METRICS) and per-gene mean PCC (index gene)."""
    folder = metrics_folder(results_dir, key)
    path = folder / "per_section.tsv"
    sections = _read(path, key, SECTION_COLUMNS)
    sections["sample"] = sections["sample"].astype(str)
    dup = sections["sample"][sections["sample"].duplicated()].unique().tolist()
    if dup:
        raise InputError(f"run head {key!r}: section(s) listed twice: {', '.join(dup)}", None, path)
    unknown = [s for s in sections["sample"] if s not in patients]
    if unknown:
        raise InputError(f"run head {key!r}: section(s) not in the sample sheet: {', '.join(unknown)}", None, path)
    sections["patient"] = [patients[s] for s in sections["sample"]]
    sections = sections.set_index("sample")[["patient", *METRICS]]
    gene_path = folder / "per_gene.tsv"
    genes = _read(gene_path, key, GENE_COLUMNS)
    genes["gene"] = genes["gene"].astype(str)
    if genes["gene"].duplicated().any():
        raise InputError(f"run head {key!r}: genes listed twice", None, gene_path)
    return sections, genes.set_index("gene")["mean_pcc"]


def _seed_mean(frames: list, what: str) -> tuple:
    """NaN-aware mean over seeds of aligned frames / series (the rows all seeds share), and a note."""
    common = frames[0].index
    for f in frames[1:]:
        common = common.intersection(f.index, sort=False)
    note = ""
    dropped = max(len(f.index) for f in frames) - len(common)
    if dropped:
        note = f"{dropped} {what} not evaluated in every seed were left out"
    stacked = np.stack([f.loc[common].to_numpy(dtype=float) for f in frames])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN section / gene stays NaN
        mean = np.nanmean(stacked, axis=0)
    return common, mean, note


def build_groups(runs: list[RunKey], loaded: dict) -> list[Group]:
    """Seed replicates of each (head, encoder, protocol), in a stable order (controls last)."""
    by = {}
    for r in runs:
        by.setdefault((r.head, r.encoder, r.protocol), []).append(r)
    groups = []
    for (head, encoder, protocol), members in by.items():
        members = sorted(members, key=lambda r: (r.seed, r.key))
        kinds = {(r.type, r.control) for r in members}
        if len(kinds) > 1:
            raise ValueError(
                f"keys {', '.join(r.key for r in members)}: seed replicates of {head!r} ({encoder}, {protocol}) "
                "differ in type or control"
            )
        seeds = [r.seed for r in members]
        if len(set(seeds)) < len(seeds):
            raise ValueError(f"keys {', '.join(r.key for r in members)}: the same seed twice for {head!r}")
        notes = []
        sec_frames = [loaded[r.key][0] for r in members]
        idx, mean, note = _seed_mean([f[list(METRICS)] for f in sec_frames], "sections")
        notes += [note] if note else []
        sections = pd.DataFrame(mean, index=idx, columns=list(METRICS))
        sections.insert(0, "patient", sec_frames[0].loc[idx, "patient"])
        gidx, gmean, gnote = _seed_mean([loaded[r.key][1] for r in members], "genes")
        notes += [gnote] if gnote else []
        groups.append(
            Group(
                head,
                members[0].type,
                encoder,
                protocol,
                members[0].control,
                [r.key for r in members],
                seeds,
                sections,
                pd.Series(gmean, index=gidx),
                notes,
            )
        )
    groups.sort(key=lambda g: (g.control is not None, g.control or "", g.head, g.encoder, g.protocol))
    return groups


def _boot(values, patients, opts) -> dict:
    return patient_bootstrap(values, patients, **opts)


def _pcc_note(metric: str, res: dict, *more) -> str:
    notes = [m for m in more if m]
    if metric in PCC_METRICS and res["n_sections"] == 0 and res["n_sections_total"] > 0:
        notes.insert(0, UNDEFINED_NOTE)
    elif res["note"]:
        notes.insert(0, res["note"])
    return "; ".join(notes)


def _interval_cols(res: dict) -> dict:
    return {
        k: res[k]
        for k in ("estimate", "ci_low", "ci_high", "level", "n_patients", "n_sections", "n_sections_total", "n_boot")
    }


def intervals_table(runs: list[RunKey], loaded: dict, opts: dict) -> pd.DataFrame:
    rows = []
    for r in runs:
        sections = loaded[r.key][0]
        for m in METRICS:
            res = _boot(sections[m], sections["patient"], opts)
            rows.append(
                {
                    "key": r.key,
                    "label": r.label,
                    "head": r.head,
                    "type": r.type,
                    "encoder": r.encoder,
                    "protocol": r.protocol,
                    "seed": r.seed,
                    "control": r.control,
                    "metric": m,
                    **_interval_cols(res),
                    "note": _pcc_note(m, res),
                }
            )
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)


def matrix_table(groups: list[Group], opts: dict) -> pd.DataFrame:
    """PCC(A) of every (head, encoder) under the honest protocol; a cell with only reference runs is a row
    of the ``reference`` block."""
    honest = {(g.head, g.encoder) for g in groups if g.protocol == "honest"}
    rows = []
    for g in groups:
        if g.protocol == "reference" and (g.head, g.encoder) in honest:
            continue
        res = _boot(g.sections["PCC_A"], g.sections["patient"], opts)
        rows.append(
            {
                "block": g.protocol,
                **g.ids(),
                "n_seeds": len(g.seeds),
                "seeds": g.seeds_text(),
                "keys": ",".join(g.keys),
                **_interval_cols(res),
                "note": _pcc_note("PCC_A", res, *g.notes),
            }
        )
    return pd.DataFrame(rows, columns=MATRIX_COLUMNS)


def _paired(a: pd.DataFrame, b: pd.DataFrame, metric: str):
    """Values of ``metric`` of two groups on their common sections (a's order), and the patients."""
    common = a.index.intersection(b.index, sort=False)
    return a.loc[common, metric].to_numpy(float), b.loc[common, metric].to_numpy(float), a.loc[common, "patient"]


def gap_table(groups: list[Group], runs: list[RunKey], loaded: dict, opts: dict) -> pd.DataFrame:
    """reference - honest per (head, encoder, seed) that ran under both protocols, and, when several seeds
    did, per (head, encoder) on the seed means (``seeds`` lists them)."""
    by = {}
    for r in runs:
        by.setdefault((r.head, r.encoder, r.seed), {})[r.protocol] = r
    units = []  # (ids, seeds text, honest keys, reference keys, honest sections, reference sections)
    for (head, encoder, seed), pair in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        if set(pair) == set(PROTOCOLS):
            h, rf = pair["honest"], pair["reference"]
            ids = {"head": head, "type": h.type, "encoder": encoder, "control": h.control}
            units.append((ids, str(seed), h.key, rf.key, loaded[h.key][0], loaded[rf.key][0]))
    index = {(g.head, g.encoder, g.protocol): g for g in groups}
    for g in groups:
        other = index.get((g.head, g.encoder, "reference"))
        if g.protocol != "honest" or other is None:
            continue
        if len(g.seeds) > 1 and g.seeds == other.seeds:  # the seed means, when both ran the same seeds
            ids = {"head": g.head, "type": g.type, "encoder": g.encoder, "control": g.control}
            seeds = "mean:" + g.seeds_text()
            units.append((ids, seeds, ",".join(g.keys), ",".join(other.keys), g.sections, other.sections))
    rows = []
    for ids, seeds, hk, rk, hon, ref in units:
        for m in METRICS:
            r_vals, h_vals, patients = _paired(ref, hon, m)
            res = paired_patient_bootstrap(r_vals, h_vals, patients, **opts)
            ok = ~(np.isnan(r_vals) | np.isnan(h_vals))
            w = wilcoxon_paired(r_vals, h_vals)
            notes = [UNDEFINED_NOTE] if m in PCC_METRICS and not ok.any() and ok.size else []
            notes += [res["note"]] if res["note"] and not notes else []
            notes += [f"wilcoxon: {w['note']}"] if w["note"] else []
            rows.append(
                {
                    **ids,
                    "seeds": seeds,
                    "honest_keys": hk,
                    "reference_keys": rk,
                    "metric": m,
                    "honest": float(h_vals[ok].mean()) if ok.any() else math.nan,
                    "reference": float(r_vals[ok].mean()) if ok.any() else math.nan,
                    "gap": res["estimate"],
                    "gap_ci_low": res["ci_low"],
                    "gap_ci_high": res["ci_high"],
                    "level": res["level"],
                    "n_patients": res["n_patients"],
                    "n_sections": res["n_sections"],
                    "n_boot": res["n_boot"],
                    "wilcoxon_n": w["n"],
                    "wilcoxon_W": w["W"],
                    "wilcoxon_p": w["p_value"],
                    "wilcoxon_method": w["method"],
                    "effect_r": w["effect_r"],
                    "median_diff": w["median_diff"],
                    "note": "; ".join(notes),
                }
            )
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def _test_row(family: str, comparison: str, protocol: str, a: Group, b: Group, va, vb, what: str) -> dict:
    w = wilcoxon_paired(va, vb)
    ea, eb = (a.head, b.head) if comparison == "heads" else (a.encoder, b.encoder)
    better = ea if w["effect_r"] > 0 else eb if w["effect_r"] < 0 else ""
    notes = []
    if w["n"] == 0 and (np.isnan(va).all() or np.isnan(vb).all()):
        notes.append(UNDEFINED_NOTE + f" ({a.head if np.isnan(va).all() else b.head})")
    elif w["note"]:
        notes.append(w["note"])
    dropped = int(np.sum(np.isnan(va) | np.isnan(vb)))
    if dropped and w["n"]:
        notes.append(f"{dropped} {what} with a NaN dropped")
    return {
        "family": family,
        "comparison": comparison,
        "protocol": protocol,
        "head_a": a.head,
        "encoder_a": a.encoder,
        "head_b": b.head,
        "encoder_b": b.encoder,
        "metric": "PCC_A",
        "n": w["n"],
        "n_zero": w["n_zero"],
        "W": w["W"],
        "p_value": w["p_value"],
        "p_holm": math.nan,
        "method": w["method"],
        "effect_r": w["effect_r"],
        "median_diff": w["median_diff"],
        "mean_diff": w["mean_diff"],
        "better": better,
        "note": "; ".join(notes),
    }


def _pair_rows(comparison: str, protocol: str, a: Group, b: Group) -> list[dict]:
    genes = a.genes.index.intersection(b.genes.index, sort=False)
    va, vb = a.genes.loc[genes].to_numpy(float), b.genes.loc[genes].to_numpy(float)
    sa, sb, _ = _paired(a.sections, b.sections, "PCC_A")
    return [
        _test_row("genes", comparison, protocol, a, b, va, vb, "genes"),
        _test_row("sections", comparison, protocol, a, b, sa, sb, "sections"),
    ]


def _informative_pair(a: Group, b: Group) -> bool:
    """A PCC test says something: neither side is the mean predictor (its PCC is undefined), and not both
    are controls (the floors are compared with the heads, not with each other)."""
    if "mean" in (a.control, b.control):
        return False
    return a.control is None or b.control is None


def pairs_table(groups: list[Group]) -> pd.DataFrame:
    """Wilcoxon tests of PCC(A) between every two heads of one encoder and protocol (encoder-free controls
    join every encoder), and between every two encoders of one head and protocol; per gene (per_gene
    mean_pcc) and per held-out section. Holm within each family (genes, sections)."""
    rows = []
    free = [g for g in groups if g.encoder_free]
    for protocol in PROTOCOLS:
        encoders = sorted({g.encoder for g in groups if not g.encoder_free and g.protocol == protocol})
        for enc in encoders:
            members = [g for g in groups if g.protocol == protocol and g.encoder == enc]
            members += [g for g in free if g.protocol == protocol]
            for a, b in itertools.combinations(members, 2):
                if _informative_pair(a, b):
                    rows += _pair_rows("heads", protocol, a, b)
        if not encoders:  # only encoder-free groups
            for a, b in itertools.combinations([g for g in free if g.protocol == protocol], 2):
                rows += _pair_rows("heads", protocol, a, b)
        heads = sorted({g.head for g in groups if g.protocol == protocol and not g.encoder_free})
        for head in heads:
            members = [g for g in groups if g.protocol == protocol and g.head == head and not g.encoder_free]
            for a, b in itertools.combinations(members, 2):
                rows += _pair_rows("encoders", protocol, a, b)
    table = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    for family in ("genes", "sections"):
        sel = table["family"] == family
        if sel.any():
            table.loc[sel, "p_holm"] = holm(table.loc[sel, "p_value"].to_numpy(float))
    return table


def seeds_table(groups: list[Group], loaded: dict) -> pd.DataFrame:
    rows = []
    for g in groups:
        if len(g.seeds) < 2:
            continue
        for m in METRICS:
            per_seed = []
            for k in g.keys:
                v = loaded[k][0][m].to_numpy(float)
                per_seed.append(float(np.mean(v[~np.isnan(v)])) if (~np.isnan(v)).any() else math.nan)
            s = seed_spread(per_seed)
            note = UNDEFINED_NOTE if m in PCC_METRICS and s["n"] == 0 else ""
            rows.append(
                {
                    **g.ids(),
                    "metric": m,
                    "n_seeds": len(g.seeds),
                    "seeds": g.seeds_text(),
                    "keys": ",".join(g.keys),
                    **s,
                    "note": note,
                }
            )
    return pd.DataFrame(rows, columns=SEED_COLUMNS)


def _floor(groups: list[Group], control: str, encoder: str, protocol: str) -> Group | None:
    """The control group for a head of ``encoder`` and ``protocol``: the same encoder, else an encoder-free
    one; the same protocol, else honest, else any."""
    cands = [g for g in groups if g.control == control and g.encoder == encoder]
    cands = cands or [g for g in groups if g.control == control and g.encoder_free]
    for want in (protocol, "honest"):
        for g in cands:
            if g.protocol == want:
                return g
    return cands[0] if cands else None


def controls_table(groups: list[Group], opts: dict) -> pd.DataFrame:
    rows = []
    for g in groups:
        if g.control in ("mean", "shuffled") or g.encoder_free:
            continue
        mean_c, shuf, ridge = (_floor(groups, c, g.encoder, g.protocol) for c in ("mean", "shuffled", "ridge"))
        own = {m: _boot(g.sections[m], g.sections["patient"], opts) for m in ("PCC_A", "MSE")}

        def est(grp, m):
            if grp is None:
                return math.nan
            v = grp.sections[m].to_numpy(float)
            return float(np.mean(v[~np.isnan(v)])) if (~np.isnan(v)).any() else math.nan

        notes = []
        margin = {
            "estimate": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "n_patients": 0,
            "n_sections": 0,
            "n_boot": 0,
        }
        if shuf is not None:
            a, b, patients = _paired(g.sections, shuf.sections, "PCC_A")
            margin = paired_patient_bootstrap(a, b, patients, **opts)
        else:
            notes.append("no shuffled control")
        mse = {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan}
        if mean_c is not None:
            a, b, patients = _paired(g.sections, mean_c.sections, "MSE")
            mse = paired_patient_bootstrap(a, b, patients, **opts)
        else:
            notes.append("no mean control")
        if ridge is None:
            notes.append("no ridge control")
        if mean_c is not None:
            notes.append("mean control's PCC is undefined (constant prediction): only its MSE is a floor")
        if own["PCC_A"]["n_sections"] == 0:
            notes.insert(0, UNDEFINED_NOTE)
        rows.append(
            {
                "encoder": g.encoder,
                "head": g.head,
                "type": g.type,
                "protocol": g.protocol,
                "control": g.control,
                "n_seeds": len(g.seeds),
                "PCC_A": own["PCC_A"]["estimate"],
                "MSE": own["MSE"]["estimate"],
                "mean_MSE": est(mean_c, "MSE"),
                "shuffled_PCC_A": est(shuf, "PCC_A"),
                "shuffled_MSE": est(shuf, "MSE"),
                "ridge_PCC_A": est(ridge, "PCC_A"),
                "margin_PCC_A": margin["estimate"],
                "margin_ci_low": margin["ci_low"],
                "margin_ci_high": margin["ci_high"],
                "MSE_minus_mean_MSE": mse["estimate"],
                "mse_ci_low": mse["ci_low"],
                "mse_ci_high": mse["ci_high"],
                "level": opts["level"],
                "n_patients": margin["n_patients"],
                "n_sections": margin["n_sections"],
                "n_boot": margin["n_boot"],
                "mean_control": ",".join(mean_c.keys) if mean_c else "",
                "shuffled_control": ",".join(shuf.keys) if shuf else "",
                "ridge_control": ",".join(ridge.keys) if ridge else "",
                "note": "; ".join(notes),
            }
        )
    return (
        pd.DataFrame(rows, columns=CONTROL_COLUMNS)
        .sort_values(["encoder", "protocol", "head"], kind="stable")
        .reset_index(drop=True)
    )


def compare(
    results_dir, keys: dict, sheet: pd.DataFrame, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED
) -> dict[str, pd.DataFrame]:
    """Every comparison table of the run (module doc). ``sheet``: the sample sheet (``sample``, ``patient``).
    A key whose metrics are missing or malformed is an ``InputError`` naming the key and the file."""
    runs = parse_keys(keys)
    if not {"sample", "patient"} <= set(sheet.columns):
        raise InputError("sample sheet lacks column sample or patient")
    patients = dict(zip(sheet["sample"].astype(str), sheet["patient"].astype(str)))
    opts = {"n_boot": int(n_boot), "level": float(level), "seed": int(seed)}
    loaded = {r.key: load_key(results_dir, r.key, patients) for r in runs}
    groups = build_groups(runs, loaded)
    log.info("comparing %d keys in %d groups, %d bootstrap resamples", len(runs), len(groups), n_boot)
    tables = {"intervals": intervals_table(runs, loaded, opts)}
    log.info("intervals: %d rows", len(tables["intervals"]))
    tables["matrix"] = matrix_table(groups, opts)
    tables["optimism_gap"] = gap_table(groups, runs, loaded, opts)
    log.info("optimism gap: %d rows", len(tables["optimism_gap"]))
    tables["paired_tests"] = pairs_table(groups)
    log.info("paired tests: %d rows", len(tables["paired_tests"]))
    tables["seeds"] = seeds_table(groups, loaded)
    tables["controls"] = controls_table(groups, opts)
    return tables


NO_ENCODER = "(no encoder)"


def matrix_layout(matrix: pd.DataFrame) -> dict:
    """The heat map's ``rows`` (heads of the honest block, then reference-only heads, then controls; by
    name within each), ``cols`` (encoders, an encoder-free control's last) and per cell ``estimate``,
    ``ci_low``, ``ci_high`` (NaN where undefined or missing) and ``ran`` (a run exists)."""
    m = matrix.reset_index(drop=True)
    is_control = [isinstance(c, str) and bool(c) for c in m["control"]]
    labels, rank = [], []
    for r, ctl in zip(m.itertuples(), is_control):
        if ctl:
            # genedml's controls are named control_<kind>; another name says which control it is
            named = r.head == r.control or r.head == f"control_{r.control}"
            labels.append(f"{r.head}" if named else f"{r.head} (control: {r.control})")
        else:
            labels.append(f"{r.head} (reference)" if r.block == "reference" else str(r.head))
        rank.append((2 if ctl else 1 if r.block == "reference" else 0, labels[-1]))
    rows = [lab for _, lab in sorted(set(rank))]
    enc = [NO_ENCODER if e.strip().lower() in ENCODER_FREE else e for e in m["encoder"].astype(str)]
    cols = sorted(set(enc), key=lambda e: (e == NO_ENCODER, e))
    shape = (len(rows), len(cols))
    out = {"rows": rows, "cols": cols, **{k: np.full(shape, np.nan) for k in ("estimate", "ci_low", "ci_high")}}
    out["ran"] = np.zeros(shape, dtype=bool)
    out["n_seeds"] = np.zeros(shape, dtype=int)
    for k, (lab, e) in enumerate(zip(labels, enc)):
        i, j = rows.index(lab), cols.index(e)
        out["ran"][i, j] = True
        out["n_seeds"][i, j] = int(m.loc[k, "n_seeds"])
        for c in ("estimate", "ci_low", "ci_high"):
            out[c][i, j] = m.loc[k, c]
    return out


def plot_matrix(matrix: pd.DataFrame, out, level: float = LEVEL) -> None:
    """Heat map of PCC(A): heads as rows, encoders as columns, each cell annotated with the estimate and its
    interval; a run whose PCC is undefined reads "undefined", a cell without a run stays blank (grey)."""
    from genedml.evaluation.figures import _save, pyplot

    plt = pyplot()
    if matrix.empty:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no runs to compare", ha="center", va="center")
        _save(fig, out)
        return
    lay = matrix_layout(matrix)
    rows, cols, est = lay["rows"], lay["cols"], lay["estimate"]
    width = 2.5 + 0.08 * max(len(r) for r in rows) + 1.7 * len(cols)
    fig, ax = plt.subplots(figsize=(width, 1.6 + 0.6 * len(rows)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#e0e0e0")
    finite = est[np.isfinite(est)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 0.05, vmax + 0.05
    image = ax.imshow(np.ma.masked_invalid(est), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for i, j in itertools.product(range(len(rows)), range(len(cols))):
        if np.isfinite(est[i, j]):
            text = f"{est[i, j]:.3f}\n[{lay['ci_low'][i, j]:.3f}, {lay['ci_high'][i, j]:.3f}]"
            if lay["n_seeds"][i, j] > 1:
                text += f"\nmean of {lay['n_seeds'][i, j]} seeds"
            dark = (est[i, j] - vmin) / (vmax - vmin) < 0.6  # viridis is dark at its low end
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        elif lay["ran"][i, j]:
            ax.text(j, i, "undefined\n(constant)", ha="center", va="center", fontsize=7, color="#444444")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("encoder")
    ax.set_title(f"PCC(A), mean over held-out sections\n[{level:.0%} patient-bootstrap interval]", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="PCC(A)")
    fig.tight_layout()
    _save(fig, out)


def write_comparison(tables: dict[str, pd.DataFrame], out_dir, level: float = LEVEL) -> dict[str, Path]:
    """Every table as ``{name}.tsv`` and the heat map ``matrix_pcc_a.png`` under ``out_dir`` (each written
    to a temporary name and renamed into place). Returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, columns in TABLES.items():
        table = tables.get(name, pd.DataFrame(columns=columns))
        paths[name] = out_dir / f"{name}.tsv"
        write_tsv(paths[name], table[columns])
    paths["matrix_pcc_a"] = out_dir / "matrix_pcc_a.png"
    plot_matrix(tables.get("matrix", pd.DataFrame(columns=MATRIX_COLUMNS)), paths["matrix_pcc_a"], level)
    return paths


def run_compare(
    results_dir, keys: dict, sheet: pd.DataFrame, out_dir, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED
) -> dict[str, pd.DataFrame]:
    """``compare`` then ``write_comparison``."""
    tables = compare(results_dir, keys, sheet, n_boot=n_boot, level=level, seed=seed)
    paths = write_comparison(tables, out_dir, level=level)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return tables
