"""Ridge regression on cached embeddings (the HEST-Benchmark style baseline).

Standardise -> optional PCA -> multi-output ridge, all fitted on training spots only. The ridge penalty
is chosen from ``alphas`` by mean per-gene PCC on the validation sections (when there are any), then the
model is refitted on training + validation spots (``alpha_rule: grid``, the default). ``alpha_rule: hest``
uses HEST-Benchmark's fixed penalty instead, ``hest_alpha``: 100 / (regression inputs x genes), the inputs
being the PCA components (or the features without PCA); nothing is selected, and under ``honest`` the
model is fitted once on training + validation spots. ``fit_intercept``, ``standardize``, ``solver`` and
``max_iter`` reach the scaler and scikit-learn's ``Ridge`` (HEST-Benchmark: no intercept, ``lsqr``,
1000 iterations); their defaults are scikit-learn's, what this head always did.

``shuffle_features: true`` makes the head the shuffled-feature null: it fits on copies of the training
(and validation) sections whose feature rows are permuted across each section's spots
(``genedml.heads.controls.shuffled_sections``, seeded with the head's seed), and predicts from the real
features of the held-out section.

A fold's model is saved as ``model.npz`` (the scaler, PCA and ridge arrays; loaded with
``allow_pickle=False``) and ``model.json`` (the chosen alpha and the settings); it predicts with numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genedml.errors import InputError
from genedml.evaluation.metrics import nanmean, pearson_per_gene
from genedml.heads.base import Head, Section, read_array_model, spot_features
from genedml.heads.controls import shuffled_sections
from genedml.heads.torch_head import UnsafeModelFile

# a fold's ridge model: plain arrays (loaded without pickle) and a JSON description
MODEL_ARRAYS, MODEL_FACTS = "model.npz", "model.json"
RIDGE_FORMAT = "genedml-ridge-1"
LEGACY_PICKLE = "model.pkl"  # what an older genedml wrote: never loaded (unpickling can execute code)

ALPHA_RULES = ("grid", "hest")
# scikit-learn Ridge solvers that fit any dense problem (lbfgs needs positive=True)
SOLVERS = ("auto", "svd", "cholesky", "lsqr", "sparse_cg", "sag", "saga")


def hest_alpha(n_inputs: int, n_genes: int) -> float:
    """HEST-Benchmark's fixed ridge penalty: 100 / (number of regression inputs x number of genes). The
    inputs are what the ridge itself sees: the PCA components when PCA is used (256 there), else the
    features. E.g. 256 components and 50 genes give 100 / 12800 = 0.0078125."""
    if n_inputs < 1 or n_genes < 1:
        raise ValueError(f"hest_alpha needs at least one input and one gene, not {n_inputs} x {n_genes}")
    return 100.0 / (int(n_inputs) * int(n_genes))


class RidgeHead(Head):
    kind = "ridge"
    # alphas: ridge penalties tried (chosen on the validation sections); pca: components (0 = none);
    # features: the per-spot views (genedml.heads.base.FEATURE_VIEWS); alpha_rule: grid (choose from alphas)
    # | hest (HEST-Benchmark's fixed formula, hest_alpha); fit_intercept / solver / max_iter: scikit-learn
    # Ridge's; standardize: scale every feature to unit variance first; shuffle_features: the null (module doc)
    defaults = {
        "alphas": [1.0],
        "pca": 0,
        "features": ["local"],
        "alpha_rule": "grid",
        "fit_intercept": True,
        "standardize": True,
        "solver": "auto",
        "max_iter": None,
        "shuffle_features": False,
    }

    @classmethod
    def checked_settings(cls, params: dict | None) -> dict:
        settings = super().checked_settings(params)
        if settings["alpha_rule"] not in ALPHA_RULES:
            raise ValueError(
                f"ridge alpha_rule must be one of {' | '.join(ALPHA_RULES)}, not {settings['alpha_rule']!r}"
            )
        if settings["solver"] not in SOLVERS:
            raise ValueError(f"ridge solver must be one of {' | '.join(SOLVERS)}, not {settings['solver']!r}")
        max_iter = settings["max_iter"]
        if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1):
            raise ValueError(f"ridge max_iter must be null or an integer >= 1, not {max_iter!r}")
        alphas = settings["alphas"]
        if not isinstance(alphas, list) or not alphas or any(isinstance(a, bool) for a in alphas):
            raise ValueError(f"ridge alphas must be a non-empty list of numbers, not {alphas!r}")
        return settings

    def _views(self) -> list[str]:
        return list(self.params["features"])

    def _n_inputs(self, n_features: int, n_samples: int) -> int:
        """What the ridge itself sees: the PCA components kept, or the features."""
        pca = int(self.params["pca"] or 0)
        return min(pca, n_features, n_samples) if pca else n_features

    def _pipeline(self, alpha: float, n_features: int, n_samples: int):
        from sklearn.decomposition import PCA
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        p = self.params
        steps = [StandardScaler()] if p["standardize"] else []
        if int(p["pca"] or 0):
            steps.append(PCA(self._n_inputs(n_features, n_samples), random_state=self.seed))
        steps.append(
            Ridge(
                alpha=alpha,
                fit_intercept=bool(p["fit_intercept"]),
                solver=p["solver"],
                max_iter=p["max_iter"],
                random_state=self.seed,  # read by the sag / saga solvers only
            )
        )
        return make_pipeline(*steps)

    def _xy(self, sections: list[Section]):
        x = np.concatenate([spot_features(s.features, self._views()) for s in sections])
        y = np.concatenate([s.targets for s in sections])
        return x, y

    def fit(self, train: list[Section], val: list[Section]) -> dict:
        shuffled = bool(self.params["shuffle_features"])
        if shuffled:  # the null: each section's feature rows permuted across its spots (one seeded draw)
            both = shuffled_sections(list(train) + list(val), self.seed)
            train, val = both[: len(train)], both[len(train) :]
        facts = self._fit_grid(train, val) if self.params["alpha_rule"] == "grid" else self._fit_hest(train, val)
        facts["alpha_rule"] = self.params["alpha_rule"]
        facts["shuffled_features"] = shuffled
        if shuffled:
            facts["shuffle"] = f"feature rows permuted within each training / validation section, seed {self.seed}"
        return facts

    def _fit_hest(self, train: list[Section], val: list[Section]) -> dict:
        """HEST-Benchmark's fit: one model with the fixed penalty on every training spot (under ``honest`` the
        validation spots join them, as after the grid's selection; under ``reference`` the test fold is unused)."""
        sections = list(train) + (list(val) if val and self.params["protocol"] == "honest" else [])
        x, y = self._xy(sections)
        n_inputs = self._n_inputs(x.shape[1], x.shape[0])
        self.alpha = hest_alpha(n_inputs, y.shape[1])
        self.model = self._pipeline(self.alpha, x.shape[1], x.shape[0]).fit(x, y)
        return {
            "alpha": self.alpha,
            "alpha_formula": f"100 / ({n_inputs} inputs x {y.shape[1]} genes)",
            "val_pcc_by_alpha": {},
            "n_train_spots": int(len(x)),
        }

    def _fit_grid(self, train: list[Section], val: list[Section]) -> dict:
        alphas = [float(a) for a in self.params["alphas"]]
        x, y = self._xy(train)
        scores = {}
        if val and len(alphas) > 1:
            for a in alphas:
                model = self._pipeline(a, x.shape[1], x.shape[0]).fit(x, y)
                scores[a] = nanmean([nanmean(pearson_per_gene(s.targets, self.predict_with(model, s))) for s in val])
            best = max(alphas, key=lambda a: (np.nan_to_num(scores[a], nan=-np.inf), -a))
        else:
            best = alphas[0]
        if val and self.params["protocol"] == "honest":  # never refit on the test fold (reference protocol)
            xv, yv = self._xy(val)
            x, y = np.concatenate([x, xv]), np.concatenate([y, yv])
        self.alpha = best
        self.model = self._pipeline(best, x.shape[1], x.shape[0]).fit(x, y)
        return {"alpha": best, "val_pcc_by_alpha": {str(k): v for k, v in scores.items()}, "n_train_spots": int(len(x))}

    def predict_with(self, model, section: Section) -> np.ndarray:
        return model.predict(spot_features(section.features, self._views())).astype(np.float32)

    def predict(self, section: Section) -> np.ndarray:
        return self.predict_with(self.model, section)

    def save(self, directory: Path) -> None:
        """``model.npz`` (the fitted arrays, no pickle) and ``model.json`` (alpha, settings, array facts)."""
        directory = Path(directory)
        model = self.model if isinstance(self.model, RidgePredictor) else RidgePredictor.from_pipeline(self.model)
        arrays = model.arrays()
        with open(directory / MODEL_ARRAYS, "wb") as fh:  # a file object: np.savez adds no suffix
            np.savez(fh, **arrays)
        facts = {
            "format": RIDGE_FORMAT,
            "alpha": float(self.alpha),
            "params": self.params,
            "seed": self.seed,
            "pca": model.pca_mean is not None,
            "n_features": int(model.scaler_mean.shape[0]),
            "n_outputs": int(model.coef.shape[0]),
        }
        (directory / MODEL_FACTS).write_text(json.dumps(facts, indent=2, sort_keys=True, default=str))
        (directory / LEGACY_PICKLE).unlink(missing_ok=True)  # an older genedml's pickle must not linger

    @classmethod
    def load(cls, directory: Path, params: dict | None = None) -> RidgeHead:
        directory = Path(directory)
        arrays_path = directory / MODEL_ARRAYS
        if not arrays_path.exists() and (directory / LEGACY_PICKLE).exists():
            raise UnsafeModelFile(directory / LEGACY_PICKLE)
        required = ("alpha", "params", "pca", "n_features", "n_outputs")
        facts, arrays = read_array_model(directory, "ridge", MODEL_ARRAYS, MODEL_FACTS, RIDGE_FORMAT, required)
        model = RidgePredictor.from_arrays(arrays, facts, arrays_path)
        head = cls(facts["params"], seed=int(facts.get("seed", 0)))
        head.alpha, head.model = float(facts["alpha"]), model
        return head


class RidgePredictor:
    """The fitted standardise -> (PCA) -> ridge pipeline as plain arrays, predicting with numpy.

    ``(x - scaler_mean) / scaler_scale``, then ``(. - pca_mean) @ pca_components.T`` when PCA was used,
    then ``. @ coef.T + intercept``: what the scikit-learn pipeline computes."""

    def __init__(self, scaler_mean, scaler_scale, coef, intercept, pca_mean=None, pca_components=None):
        self.scaler_mean, self.scaler_scale = scaler_mean, scaler_scale
        self.pca_mean, self.pca_components = pca_mean, pca_components
        self.coef, self.intercept = coef, intercept

    @classmethod
    def from_pipeline(cls, pipeline) -> RidgePredictor:
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        steps = [step for _, step in pipeline.steps]
        ridge = steps[-1]
        scaler = next((s for s in steps if isinstance(s, StandardScaler)), None)
        pca = next((s for s in steps if isinstance(s, PCA)), None)
        n_features = int(pipeline.n_features_in_)
        coef = np.asarray(ridge.coef_, dtype=np.float64)
        coef = coef.reshape(1, -1) if coef.ndim == 1 else coef
        # no scaler (standardize: false): the identity, so the file has the same arrays either way
        mean = np.zeros(n_features) if scaler is None else np.asarray(scaler.mean_, dtype=np.float64)
        scale = (
            np.ones(n_features)
            if scaler is None or scaler.scale_ is None
            else np.asarray(scaler.scale_, dtype=np.float64)
        )
        # fit_intercept: false leaves a scalar 0.0: one zero per output
        intercept = np.broadcast_to(np.asarray(ridge.intercept_, dtype=np.float64).reshape(-1), (coef.shape[0],))
        return cls(
            mean,
            scale,
            coef,
            intercept.copy(),
            None if pca is None else np.asarray(pca.mean_, dtype=np.float64),
            None if pca is None else np.asarray(pca.components_, dtype=np.float64),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "scaler_mean": self.scaler_mean,
            "scaler_scale": self.scaler_scale,
            "coef": self.coef,
            "intercept": self.intercept,
        }
        if self.pca_mean is not None:
            out.update(pca_mean=self.pca_mean, pca_components=self.pca_components)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, facts: dict, path) -> RidgePredictor:
        """Rebuild from ``model.npz``'s arrays, checking every one is there, numeric and of matching shape."""
        pca = bool(facts["pca"])
        f, g = int(facts["n_features"]), int(facts["n_outputs"])
        want = {"scaler_mean": (f,), "scaler_scale": (f,), "intercept": (g,)}
        if pca:
            comps = arrays.get("pca_components")
            k = comps.shape[0] if comps is not None and comps.ndim == 2 else -1
            want.update(pca_mean=(f,), pca_components=(k, f), coef=(g, k))
        else:
            want["coef"] = (g, f)
        missing = sorted(set(want) - set(arrays))
        if missing:
            raise InputError(f"the ridge model lacks array(s) {missing}", None, path)
        problems = []
        for name, shape in want.items():
            a = arrays[name]
            if a.dtype.kind not in "fiu":
                problems.append(f"{name} is {a.dtype}, not numeric")
            elif tuple(a.shape) != shape:
                problems.append(f"{name} has shape {tuple(a.shape)}, expected {shape}")
        if not problems and not np.all(arrays["scaler_scale"] != 0):
            problems.append("scaler_scale holds zeros")
        if problems:
            raise InputError("inconsistent ridge model arrays: " + "; ".join(problems), None, path)
        a = {name: np.asarray(arrays[name], dtype=np.float64) for name in want}
        return cls(
            a["scaler_mean"], a["scaler_scale"], a["coef"], a["intercept"], a.get("pca_mean"), a.get("pca_components")
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.scaler_mean.shape[0]:
            raise ValueError(f"ridge model expects (N, {self.scaler_mean.shape[0]}) features, got {x.shape}")
        z = (x - self.scaler_mean) / self.scaler_scale
        if self.pca_mean is not None:
            z = (z - self.pca_mean) @ self.pca_components.T
        return z @ self.coef.T + self.intercept
