# Real input: the sample sheet from genedml's dataset registry, and legacy-ST sections converted to the
# HEST-1k layout (data.source: legacy_st), and Space Ranger samples (data.source: spaceranger) likewise, so
# that every later rule reads one layout.


rule sample_sheet:
    """The sample sheet of a known dataset (config `dataset`), for the samples the config names."""
    output:
        sheet="results/samples.tsv",
    params:
        dataset=config["dataset"] or "",
        samples=SAMPLES,
        source=RUN.source,
    log:
        "results/logs/sample_sheet.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml sample-sheet --dataset {params.dataset:q} --samples {params.samples:q} "
        "--source {params.source:q} --out {output.sheet:q} > {log:q} 2>&1"


rule import_st:
    """One legacy-ST section (counts, spot file, JPEG) as a HEST-layout sample: pyramidal TIFF with its
    µm/px in the tags, raw-count .h5ad, metadata JSON."""
    input:
        unpack(lambda wildcards: RUN.legacy_files(wildcards.sample)),
    output:
        **hest_outputs(IMPORT_DIR),
    params:
        section=lambda wildcards: RUN.legacy_section(wildcards.sample),
        patient=lambda wildcards: RUN.patient[wildcards.sample],
        dataset=lambda wildcards: RUN.sheet_value(wildcards.sample, "dataset") or "legacy_st",
        mpp=lambda wildcards: RUN.import_mpp(wildcards.sample),
        settings=RUN.flags(ImportSpec),
        out_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output.slide)),
    log:
        "results/logs/import_st/{sample}.log",
    benchmark:
        "results/benchmarks/import_st/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml import-st --section {params.section:q} --sample {wildcards.sample:q} --counts {input.counts:q} "
        "--spots {input.spots:q} --image {input.image:q} --out-dir {params.out_dir:q} --patient {params.patient:q} "
        "--dataset {params.dataset:q} {params.mpp} {params.settings} --overwrite > {log:q} 2>&1"


rule import_spaceranger:
    """One Space Ranger Visium sample (outs/ and the full-resolution image) as a HEST-layout sample: pyramidal
    TIFF with µm/px from the 55 µm spot, raw-count .h5ad with in_tissue and array coordinates, metadata JSON."""
    input:
        unpack(lambda wildcards: RUN.spaceranger_files(wildcards.sample)),
    output:
        **hest_outputs(SPACERANGER_DIR),
    params:
        patient=lambda wildcards: RUN.patient[wildcards.sample],
        dataset=lambda wildcards: RUN.sheet_value(wildcards.sample, "dataset") or "spaceranger",
        settings=RUN.flags(SpaceRangerSpec),
        out_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output.slide)),
    log:
        "results/logs/import_spaceranger/{sample}.log",
    benchmark:
        "results/benchmarks/import_spaceranger/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml import-spaceranger --sample {wildcards.sample:q} --outs {input.outs:q} --image {input.image:q} "
        "--out-dir {params.out_dir:q} --patient {params.patient:q} --dataset {params.dataset:q} {params.settings} "
        "--overwrite > {log:q} 2>&1"
