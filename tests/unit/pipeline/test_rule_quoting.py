"""No config value reaches a shell as code: every placeholder of every rule's shell command is quoted by
Snakemake (``:q``) or is a flag string genedml built with shlex (the generated stage flags)."""

import re

from support.workflow import REPO

# placeholders whose text genedml quotes itself (genedml.pipeline.schema.to_flags, RunPlan.spot_image_flag,
# RunPlan.import_mpp: a float), and the thread count Snakemake fills in
PRE_QUOTED = {"params.settings", "params.encoder", "params.spot_images", "params.mpp", "threads"}


def shell_commands():
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "shell:":
                continue
            parts = []
            for follow in lines[i + 1 :]:
                if not follow.strip().startswith('"'):
                    break
                parts.append(follow.strip().strip('"'))
            yield path.name, "".join(parts)


def test_every_placeholder_is_quoted():
    commands = list(shell_commands())
    assert len(commands) >= 15, commands
    unquoted = []
    for name, command in commands:
        for field in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", command):
            key, _, fmt = field.partition(":")
            if fmt != "q" and key not in PRE_QUOTED:
                unquoted.append(f"{name}: {{{field}}}")
    assert not unquoted, "placeholders a config value could turn into shell code: " + ", ".join(unquoted)


def test_generated_flags_are_shell_quoted():
    from genedml.study.genes import GeneSpec

    flags = GeneSpec.flags({"list": "my genes $(touch X).txt"})
    assert "'my genes $(touch X).txt'" in flags
