"""Read Snakemake's printed job blocks (dry-run plans, run logs, SLURM job logs) into comparable records."""

from __future__ import annotations

import re
from dataclasses import dataclass

RULE_LINE = re.compile(r"^(?P<indent>\s*)(?P<local>local)?rule (?P<rule>\w+):\s*$")
GROUP_LINE = re.compile(r"Group job (?P<group>\S+) \(jobs in lexicogr\. order\):")
FIELD_LINE = re.compile(r"^\s+(?P<key>wildcards|jobid|resources): (?P<value>.*)$")
SUBMITTED = re.compile(r"Job (?P<job>\S+) has been submitted with SLURM jobid (?P<slurm>\d+) \(log: (?P<log>[^)]+)\)")


@dataclass(frozen=True)
class JobBlock:
    rule: str
    wildcards: str  # as Snakemake prints it, e.g. "sample=S1" ('' for none)
    group: str | None  # the group job it was printed in, if any
    local: bool
    resources: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.rule, self.wildcards

    def resource(self, name: str) -> str | None:
        match = re.search(rf"(?:^|, ){re.escape(name)}=([^,]+)", self.resources)
        return match.group(1) if match else None


def job_blocks(text: str) -> list[JobBlock]:
    """Every job block in the order printed; rules printed inside a 'Group job' header carry its name."""
    blocks: list[JobBlock] = []
    group = None
    current: dict | None = None

    def close():
        if current is not None:
            blocks.append(
                JobBlock(
                    current["rule"],
                    current.get("wildcards", ""),
                    current["group"],
                    current["local"],
                    current.get("resources", ""),
                )
            )

    for line in text.splitlines():
        if m := GROUP_LINE.search(line):
            close()
            current, group = None, m["group"]
            continue
        if m := RULE_LINE.match(line):
            close()
            if not m["indent"]:
                group = None  # a top-level rule block ends any group listing
            current = {"rule": m["rule"], "local": bool(m["local"]), "group": group}
            continue
        if current is not None and (m := FIELD_LINE.match(line)):
            current.setdefault(m["key"], m["value"].strip())
    close()
    return blocks


def slurm_submissions(text: str) -> list[tuple[str, int, str]]:
    """(Snakemake job id, SLURM job id, SLURM log path) of every submission the SLURM executor reported."""
    return [(m["job"], int(m["slurm"]), m["log"]) for m in SUBMITTED.finditer(text)]
