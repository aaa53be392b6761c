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
        "genedml tile --sample {wildcards.sample} --slide {input.slide} --st {input.st} "
        "--metadata {input.metadata} --out {output.geometry} {params.settings} > {log} 2>&1"
