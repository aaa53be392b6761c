"""Ridge regression on cached embeddings (the HEST-Benchmark style baseline).

Standardise -> optional PCA -> multi-output ridge, all fitted on training spots only. The ridge penalty
is chosen from ``alphas`` by mean per-gene PCC on the validation sections (when there are any), then the
model is refitted on training + validation spots.

A fold's model is saved as ``model.npz`` (the scaler, PCA and ridge arrays; loaded with
``allow_pickle=False``) and ``model.json`` (the chosen alpha and the settings); it predicts with numpy.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from genedml.errors import InputError
from genedml.evaluation.metrics import nanmean, pearson_per_gene
from genedml.heads.base import Head, Section, spot_features
from genedml.heads.torch_head import UnsafeModelFile

# a fold's ridge model: plain arrays (loaded without pickle) and a JSON description
MODEL_ARRAYS, MODEL_FACTS = "model.npz", "model.json"
RIDGE_FORMAT = "genedml-ridge-1"
LEGACY_PICKLE = "model.pkl"  # what an older genedml wrote: never loaded (unpickling can execute code)


class RidgeHead(Head):
    kind = "ridge"
    # alphas: ridge penalties tried (chosen on the validation sections); pca: components (0 = none);
    # features: the per-spot views (genedml.heads.base.FEATURE_VIEWS)
    defaults = {"alphas": [1.0], "pca": 0, "features": ["local"]}

    def _views(self) -> list[str]:
        return list(self.params["features"])

    def _pipeline(self, alpha: float, n_features: int, n_samples: int):
        from sklearn.decomposition import PCA
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        steps = [StandardScaler()]
        pca = int(self.params["pca"] or 0)
        if pca:
            steps.append(PCA(min(pca, n_features, n_samples), random_state=self.seed))
        steps.append(Ridge(alpha=alpha))
        return make_pipeline(*steps)

    def _xy(self, sections: list[Section]):
        x = np.concatenate([spot_features(s.features, self._views()) for s in sections])
        y = np.concatenate([s.targets for s in sections])
        return x, y

    def fit(self, train: list[Section], val: list[Section]) -> dict:
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
        arrays_path, facts_path = directory / MODEL_ARRAYS, directory / MODEL_FACTS
        if not arrays_path.exists() and (directory / LEGACY_PICKLE).exists():
            raise UnsafeModelFile(directory / LEGACY_PICKLE)
        for path in (arrays_path, facts_path):
            if not path.is_file():
                raise InputError("the ridge model file is missing (rerun the train step)", None, path)
        try:
            facts = json.loads(facts_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"not a readable ridge model description ({e})", None, facts_path) from e
        if not isinstance(facts, dict) or facts.get("format") != RIDGE_FORMAT:
            raise InputError(
                f"not a genedml ridge model description (format is not {RIDGE_FORMAT!r})", None, facts_path
            )
        missing = [k for k in ("alpha", "params", "pca", "n_features", "n_outputs") if k not in facts]
        if missing:
            raise InputError(f"the ridge model description lacks {missing}", None, facts_path)
        try:
            with np.load(arrays_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise InputError(f"not a readable ridge model array file ({e})", None, arrays_path) from e
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
        steps = [step for _, step in pipeline.steps]
        scaler, ridge = steps[0], steps[-1]
        pca = steps[1] if len(steps) == 3 else None
        n_features = int(scaler.mean_.shape[0])
        coef = np.asarray(ridge.coef_, dtype=np.float64)
        coef = coef.reshape(1, -1) if coef.ndim == 1 else coef
        scale = np.ones(n_features) if scaler.scale_ is None else np.asarray(scaler.scale_, dtype=np.float64)
        return cls(
            np.asarray(scaler.mean_, dtype=np.float64),
            scale,
            coef,
            np.asarray(ridge.intercept_, dtype=np.float64).reshape(-1),
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
