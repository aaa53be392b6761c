# Comparisons a reviewer can check: patient-level bootstrap intervals, paired tests between heads and between
# encoders, the optimism gap of heads run under both protocols, the seed spread, the controls, and the heat
# map of PCC(A) per (encoder, head) (genedml compare; docs/statistics.md).


rule compare:
    """Intervals, paired tests, optimism gap, seed spread and controls of every run head; the matrix heat map."""
    input:
        per_section=expand("results/metrics/{head}/per_section.tsv", head=HEADS),
        per_gene=expand("results/metrics/{head}/per_gene.tsv", head=HEADS),
        sheet=RUN.sheet_path,
    output:
        comparison=directory("results/comparison"),
    params:
        # what each run head is (head, encoder, protocol, seed, control, label): how the report shows a head
        # may change its label, so the labels travel here too, and relabelling reruns only this cheap step
        run_heads=lambda wildcards: RUN.comparison_keys(),
        bootstrap=config["report"]["bootstrap"],
        level=config["report"]["ci_level"],
        seed=config["report"]["bootstrap_seed"],
    log:
        "results/logs/compare.log",
    benchmark:
        "results/benchmarks/compare.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 2000 * attempt,
        runtime=30,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml compare --results-dir results/metrics --keys {params.run_heads:q} --sheet {input.sheet:q} "
        "--out-dir {output.comparison:q} --bootstrap {params.bootstrap:q} --level {params.level:q} "
        "--seed {params.seed:q} > {log:q} 2>&1"
