rule tile:
    """Where each spot's local crop and neighbour tiles lie on the slide (no pixels are copied)."""
    input:
        unpack(sample_files),
    output:
        geometry="results/tiles/{sample}.npz",
    params:
        settings=RUN.flags(TileSpec, SpotFilterSpec),
    log:
        "results/logs/tile/{sample}.log",
    benchmark:
        "results/benchmarks/tile/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml tile --sample {wildcards.sample:q} --slide {input.slide:q} --st {input.st:q} "
        "--metadata {input.metadata:q} --out {output.geometry:q} {params.settings} > {log:q} 2>&1"
