# The report: slide thumbnails, figures, and results/report/index.html (+ Markdown) with everything beside it.
# Which rows each head gives comes from its `report:` key (RUN.head_report, checked when the run starts).


rule thumbnail:
    """A small H&E image of one slide and the scale factors scanpy's sc.pl.spatial expects."""
    input:
        slide=lambda wildcards: sample_files(wildcards)["slide"],
        metadata=lambda wildcards: sample_files(wildcards)["metadata"],
        geometry="results/tiles/{sample}.npz",
    output:
        image="results/thumbnails/{sample}.png",
        facts="results/thumbnails/{sample}.json",
    params:
        settings=RUN.flags(ThumbnailSpec),
    log:
        "results/logs/thumbnail/{sample}.log",
    benchmark:
        "results/benchmarks/thumbnail/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml thumbnail --sample {wildcards.sample:q} --slide {input.slide:q} --geometry {input.geometry:q} "
        "--metadata {input.metadata:q} --out-image {output.image:q} --out-json {output.facts:q} "
        "{params.settings} > {log:q} 2>&1"


rule figures:
    """Spatial maps of one head: truth vs prediction over the H&E of every held-out section."""
    input:
        exports="results/predictions/{head}",
        thumbnails=expand("results/thumbnails/{sample}.json", sample=TEST_SAMPLES),
        genes="results/genes/genes.tsv",
    output:
        # one folder, {sample}.jpg per held-out section (a folder, as the exports)
        spatial=report(
            directory("results/figures/{head}/spatial"),
            patterns=["{name}.jpg"],
            caption="../report/spatial.rst",
            category="Spatial maps",
            subcategory="{head}",
        ),
        scores="results/figures/{head}/spatial_pcc.json",
    params:
        settings=RUN.flags(SpatialFigureSpec),
        exports=lambda wildcards, input: [f"{s}={input.exports}/{s}.h5ad" for s in TEST_SAMPLES],
        thumbnails=lambda wildcards, input: [f"{s}={p}" for s, p in zip(TEST_SAMPLES, input.thumbnails)],
        out_dir=lambda wildcards, output: os.path.dirname(output.scores),
    log:
        "results/logs/figures/{head}.log",
    benchmark:
        "results/benchmarks/figures/{head}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml figures --head {wildcards.head:q} --exports {params.exports:q} --thumbnails {params.thumbnails:q} "
        "--genes {input.genes:q} {params.settings} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule figures_overview:
    """Per-gene PCC distribution of every head; one plot per hyper-parameter sweep."""
    input:
        per_gene=expand("results/metrics/{head}/per_gene.tsv", head=HEADS),
        summaries=expand("results/metrics/{head}/summary.tsv", head=HEADS),
    output:
        distribution=report(
            "results/figures/pcc_per_gene.png",
            caption="../report/pcc_per_gene.rst",
            category="Figures",
        ),
        sweeps=report(
            expand("results/figures/sweep_{param}.png", param=RUN.sweeps),
            caption="../report/sweep.rst",
            category="Figures",
        ),
    params:
        heads=json.dumps(RUN.head_report, sort_keys=True),
    log:
        "results/logs/figures_overview.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml figures-overview --heads {params.heads:q} --metrics-dir results/metrics "
        "--out-dir results/figures > {log:q} 2>&1"


rule report_markdown:
    """The report: results/report/index.html and index.md with figures and tables beside them; results/report.md."""
    input:
        summary="results/metrics/summary.tsv",
        metrics=expand(
            "results/metrics/{head}/{table}",
            head=HEADS,
            table=["per_section.tsv", "per_fold.tsv", "per_gene.tsv", "per_gene_section.tsv", "gene_sets.json"],
        ),
        facts=expand("results/heads/{head}/fold{fold}/fold.json", head=HEADS, fold=FOLDS),
        # the maps of one run head per head and encoder, no controls (RunPlan.mapped_heads)
        spatial=expand("results/figures/{head}/spatial_pcc.json", head=RUN.mapped_heads()),
        overview="results/figures/pcc_per_gene.png",
        sweeps=expand("results/figures/sweep_{param}.png", param=RUN.sweeps),
        # intervals, paired tests, optimism gap, seed spread, controls, matrix (rule compare)
        comparison="results/comparison",
        # per encoder: each gene's ceiling score against each head's PCC (rule ceiling_figure)
        ceiling=expand("results/figures/ceiling_{encoder}.png", encoder=RUN.encoders),
        folds="results/folds/folds.tsv",
        genes="results/genes/genes.tsv",
        sheet=RUN.sheet_path,  # the config's TSV, or the one rule sample_sheet builds from the registry
        stores=[RUN.features_path(s) for s in SAMPLES],
        # sections and bare slides predicted without counts (config predict / slides)
        unlabelled=RUN.unlabelled_outputs(),
    output:
        markdown=report("results/report.md", caption="../report/report.rst", category="Report"),
        # not tagged for `snakemake --report`: Snakemake embeds a folder only in .zip reports, and the
        # figures and tables inside it are tagged where they are made
        site=directory("results/report"),
    params:
        heads=json.dumps(RUN.head_report, sort_keys=True),
        settings=RUN.flags(EvaluateSpec, TargetSpec),
        facts=RUN.report_facts(),
        unlabelled=json.dumps(RUN.unlabelled(), sort_keys=True),
    log:
        "results/logs/report_markdown.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml report --results-dir results --heads {params.heads:q} --sheet {input.sheet:q} "
        "--features {input.stores:q} --site-dir {output.site:q} --markdown {output.markdown:q} "
        "{params.settings} --config-facts {params.facts:q} --unlabelled {params.unlabelled:q} > {log:q} 2>&1"
