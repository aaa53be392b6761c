rule tile:
    """Where each spot's local crop and neighbour tiles lie on the slide (no pixels are copied)."""
    input:
        unpack(sample_files),
    output:
        geometry="results/tiles/{sample}.npz",
    params:
        tile_px=config["tiles"]["tile_px"],
        target_mpp=config["tiles"]["target_mpp"],
        grid=config["tiles"]["grid"],
        min_inside=config["tiles"].get("min_inside", 0.5),
        neighbour_mode=config["tiles"].get("neighbour_mode", "centred"),
        grid_stride=config["tiles"].get("grid_stride", 1.0),
        # 'auto' or 'x,y' (a grid node centre, in tiles)
        grid_offset=",".join(str(float(v)) for v in config["tiles"]["grid_offset"])
        if isinstance(config["tiles"].get("grid_offset"), list)
        else config["tiles"].get("grid_offset", "auto"),
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
        "--metadata {input.metadata} --out {output.geometry} --tile-px {params.tile_px} "
        "--target-mpp {params.target_mpp} --grid {params.grid} --min-inside {params.min_inside} "
        "--neighbour-mode {params.neighbour_mode} --grid-stride {params.grid_stride} "
        "--grid-offset {params.grid_offset:q} > {log} 2>&1"
