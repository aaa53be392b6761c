# Config validation and the run plan shared by every rule. Every decision about the config is made by
# genedml.pipeline.plan.RunPlan; each rule hands its stage the stage's slice of the config as flags
# generated from the schema (RUN.flags(Spec)), so a rule's params change exactly when its slice does.
import json
import os
import re
import sys

from genedml.evaluation.ceiling import CeilingSpec
from genedml.evaluation.evaluate import EvaluateSpec
from genedml.evaluation.figures import SpatialFigureSpec
from genedml.evaluation.thumbnails import ThumbnailSpec
from genedml.io.demo import DemoSpec
from genedml.io.hest import SpotFilterSpec
from genedml.io.legacy_st import ImportSpec
from genedml.io.sample_sheet import column_patterns
from genedml.io.spaceranger import SpaceRangerSpec
from genedml.pipeline import schema
from genedml.pipeline.checks import put_genedml_on_path
from genedml.evaluation.ood import OODSpec
from genedml.pipeline.plan import (
    DEMO_DIR,
    GENE_SEMANTICS,
    IMPORT_DIR,
    OOD_DIR,
    OOD_REFERENCE,
    SLIDES_DIR,
    SPACERANGER_DIR,
    RunPlan,
)
from genedml.study.folds import FoldSpec
from genedml.study.gene_semantics import GeneSemanticsSpec
from genedml.study.genes import GeneSpec
from genedml.study.targets import TargetSpec
from genedml.tiles.encoders import EncoderSpec
from genedml.tiles.geometry import TileSpec
from genedml.tiles.lattice import LatticeSpec
from genedml.tiles.tissue import TissueSpec
from genedml.tiles.spot_images import SpotImageSpec

# the jobs run the `genedml` installed beside the Python that runs Snakemake (the package imported here),
# also when its environment was not activated (`.venv/bin/snakemake`)
put_genedml_on_path()

# checks the config against workflow/schemas/config.schema.yaml and fills every default it declares (the one
# place defaults and allowed values are written); the run plan checks the sample sheet's values
schema.validate_config(config)

RUN = RunPlan(config)
SAMPLES = RUN.samples
TEST_SAMPLES = RUN.test_samples  # held out by some fold: these get predictions, metrics and maps
if RUN.train_only:
    print(
        f"genedml: no fold holds out {', '.join(RUN.train_only)}: they are only trained on, and get no "
        "predictions, metrics or maps",
        file=sys.stderr,
    )
HEADS = list(RUN.heads)
FOLDS = RUN.folds
PREDICT_SAMPLES, PREDICT_HEADS = RUN.predict_samples, RUN.predict_heads
SLIDE_SAMPLES, SLIDE_HEADS = RUN.slide_samples, RUN.slide_heads  # bare slides (config `slides`)


wildcard_constraints:
    # a pattern, not the list of samples: an alternation of every sample makes each of the DAG's file
    # matches as slow as the sample count (quadratic planning at HEST-1k scale)
    sample=column_patterns()["sample"],
    head="|".join(re.escape(h) for h in HEADS),
    encoder="|".join(re.escape(e) for e in RUN.encoders),
    fold=r"\d+",


def sample_files(wildcards):
    """Slide, expression and metadata of one sample in the HEST-1k layout."""
    return RUN.sample_files(wildcards.sample)


def hest_outputs(folder):
    """The HEST-1k layout of {sample} under a folder a rule writes (demo_data, import_st)."""
    return RUN.layout_patterns(folder)
