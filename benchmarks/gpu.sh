#!/usr/bin/env bash
# The GPU benchmark (genedml bench gpu) on a machine that may reach no package registry.
#
#   benchmarks/gpu.sh [genedml bench gpu flags]       e.g. benchmarks/gpu.sh --out gpu.json
#   GPU_PYTHON=python3.12 benchmarks/gpu.sh --device cpu --smoke
#
# The python (GPU_PYTHON, default python3) must have torch, timm, numpy, scipy, h5py and scikit-learn. The
# distributions below that it lacks are installed, without dependencies and without any index, from the
# wheels that `make gpu-wheels GPU_PYTHON_VERSION=X.Y` downloaded into gpu-wheels/pyX.Y/, into a folder of
# their own (GPU_SITE, default results/bench/gpu-site-pyX.Y) that goes on PYTHONPATH with this checkout:
# nothing is built and the python's own packages are left as they are.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${GPU_PYTHON:-python3}
version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
wheels=${GPU_WHEELS_DIR:-$root/gpu-wheels}/py$version
site=${GPU_SITE:-$root/results/bench/gpu-site-py$version}

# what the embed path and the Gene-DML head import beyond torch/timm/numpy/scipy/h5py/scikit-learn
dists=$(grep -v '^#' "$root/benchmarks/gpu-wheels.txt")

missing=$(PYTHONPATH="$site" "$py" - $dists <<'PY'
import importlib.metadata as md
import sys

for dist in sys.argv[1:]:
    try:
        md.version(dist)
    except md.PackageNotFoundError:
        print(dist)
PY
)
if [ -n "$missing" ]; then
    if [ ! -d "$wheels" ]; then
        echo "gpu.sh: $py lacks: $(echo $missing); no wheel folder $wheels" >&2
        echo "gpu.sh: on a machine that reaches PyPI run: make gpu-wheels GPU_PYTHON_VERSION=$version, and copy gpu-wheels/ here" >&2
        exit 2
    fi
    echo "gpu.sh: installing into $site from $wheels: $(echo $missing)"
    t0=$(date +%s)
    # the wheel of each missing distribution at the lock's version, named by its file: pip resolves nothing
    files=()
    for dist in $missing; do
        pin=$(grep -i "^$dist==" "$root/envs/requirements.lock" | cut -d= -f3)
        stem=$(echo "$dist" | tr 'A-Z-' 'a-z_')
        found=$(find "$wheels" -maxdepth 1 -iname "${stem}-${pin}-*.whl" | head -n 1)
        [ -n "$pin" ] && [ -n "$found" ] || { echo "gpu.sh: no wheel for $dist==$pin in $wheels" >&2; exit 2; }
        files+=("$found")
    done
    "$py" -m pip install --quiet --no-deps --no-index --no-compile --disable-pip-version-check \
        --target "$site" "${files[@]}"
    echo "gpu.sh: installed in $(( $(date +%s) - t0 )) s"
fi

export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"
exec "$py" -m genedml.bench_gpu "$@"
