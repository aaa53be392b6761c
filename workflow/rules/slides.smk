# Bare H&E slides (config `slides`): tissue mask and virtual spots, then the run's own tile, embed and
# predict rules; out-of-distribution scores of every section predicted without counts; maps of each slide.


rule virtual_spots:
    """A lattice of virtual spots inside the tissue of a bare slide, with the training run's spot geometry."""
    input:
        slide=lambda wildcards: RUN.slides[wildcards.sample]["slide"],
        # the lattice (technology, pitch, spot size) of slides.lattice.technology auto comes from here
        training=RUN.training_metadata(),
    output:
        st=f"{SLIDES_DIR}/st/{{sample}}.h5ad",
        metadata=f"{SLIDES_DIR}/metadata/{{sample}}.json",
        qc=report(
            f"{SLIDES_DIR}/qc/{{sample}}.png",
            caption="../report/slide_qc.rst",
            category="Slides",
            labels={"slide": "{sample}", "figure": "tissue and virtual spots"},
        ),
    params:
        settings=RUN.flags(TissueSpec, LatticeSpec),
        mpp=lambda wildcards: RUN.slide_mpp_flag(wildcards.sample),
    wildcard_constraints:
        sample="|".join(re.escape(s) for s in SLIDE_SAMPLES) or "(?!)",
    log:
        "results/logs/virtual_spots/{sample}.log",
    benchmark:
        "results/benchmarks/virtual_spots/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml virtual-spots --sample {wildcards.sample:q} --slide {input.slide:q} "
        "--training-metadata {input.training:q} {params.mpp} {params.settings} --out-st {output.st:q} "
        "--out-metadata {output.metadata:q} --out-qc {output.qc:q} > {log:q} 2>&1"


rule ood_reference:
    """The training spots' standardised embeddings per fold and the held-out spots' distances to them."""
    input:
        folds="results/folds/folds.tsv",
        features=[RUN.features_path(s) for s in SAMPLES],
    output:
        reference=directory(OOD_REFERENCE),
    params:
        features=RUN.sample_pairs("features"),
        settings=RUN.flags(OODSpec),
    log:
        "results/logs/ood_reference.log",
    benchmark:
        "results/benchmarks/ood_reference.tsv"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=60,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml ood-reference --folds {input.folds:q} --features {params.features:q} {params.settings} "
        "--out {output.reference:q} > {log:q} 2>&1"


rule ood_score:
    """How far each spot of a section predicted without counts lies from the training spots (1: as far as a
    typical held-out spot)."""
    input:
        reference=OOD_REFERENCE,
        features=lambda wildcards: RUN.features_path(wildcards.sample),
    output:
        scores=f"{OOD_DIR}/{{sample}}.tsv",
        summary=f"{OOD_DIR}/{{sample}}.json",
    params:
        threshold=config["slides"]["ood_threshold"],
        warn_fraction=config["slides"]["ood_warn_fraction"],
    wildcard_constraints:
        sample="|".join(re.escape(s) for s in SLIDE_SAMPLES + PREDICT_SAMPLES) or "(?!)",
    log:
        "results/logs/ood_score/{sample}.log",
    benchmark:
        "results/benchmarks/ood_score/{sample}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml ood-score --reference {input.reference:q} --features {input.features:q} "
        "--sample {wildcards.sample:q} --threshold {params.threshold:q} --warn-fraction {params.warn_fraction:q} "
        "--out-tsv {output.scores:q} --out-json {output.summary:q} > {log:q} 2>&1"


rule slide_maps:
    """Maps of chosen genes, of the fold models' disagreement and of the OOD score over a slide's thumbnail."""
    input:
        predictions="results/predict/{head}/{sample}.h5ad",
    output:
        maps=report(
            "results/slides/maps/{head}/{sample}.png",
            caption="../report/slide_maps.rst",
            category="Slides",
            subcategory="{head}",
            labels={"slide": "{sample}", "head": "{head}"},
        ),
    params:
        genes=config["slides"]["maps"],
    wildcard_constraints:
        sample="|".join(re.escape(s) for s in SLIDE_SAMPLES) or "(?!)",
    log:
        "results/logs/slide_maps/{head}/{sample}.log",
    benchmark:
        "results/benchmarks/slide_maps/{head}/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml slide-maps --predictions {input.predictions:q} --genes {params.genes:q} --out {output.maps:q} "
        "> {log:q} 2>&1"
