# Real input: the sample sheet from genedml's dataset registry, and legacy-ST sections converted to the
# HEST-1k layout (data.source: legacy_st) so that every later rule reads one layout. Helpers: common.smk.

rule sample_sheet:
    """The sample sheet of a known dataset (config `dataset`), for the samples the config names."""
    output:
        sheet="results/samples.tsv",
    params:
        dataset=config.get("dataset") or "",
        samples=" ".join(SAMPLES),
        source="legacy_st" if config["data"]["source"] == "legacy_st" else "hest",
    log:
        "results/logs/sample_sheet.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml sample-sheet --dataset {params.dataset} --samples {params.samples} "
        "--source {params.source} --out {output.sheet} > {log} 2>&1"


rule import_st:
    """One legacy-ST section (counts, spot file, JPEG) as a HEST-layout sample: pyramidal TIFF with its
    µm/px in the tags, raw-count .h5ad, metadata JSON."""
    input:
        unpack(legacy_files),
    output:
        slide=f"{IMPORT_DIR}/wsis/{{sample}}.tif",
        st=f"{IMPORT_DIR}/st/{{sample}}.h5ad",
        metadata=f"{IMPORT_DIR}/metadata/{{sample}}.json",
    params:
        section=lambda wildcards: legacy_section(wildcards.sample),
        patient=lambda wildcards: PATIENT[wildcards.sample],
        dataset=lambda wildcards: sheet_value(wildcards.sample, "dataset") or "legacy_st",
        mpp=import_mpp,
        technology=config["data"].get("technology", "st"),
        quality=config["data"].get("jpeg_quality", 90),
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
        "genedml import-st --section {params.section} --sample {wildcards.sample} --counts {input.counts} "
        "--spots {input.spots} --image {input.image} --out-dir {params.out_dir} --patient {params.patient:q} "
        "--dataset {params.dataset:q} {params.mpp} --technology {params.technology} --quality {params.quality} "
        "--overwrite > {log} 2>&1"
