"""Ridge regression on cached embeddings (the HEST-Benchmark style baseline).

Standardise -> optional PCA -> multi-output ridge, all fitted on training spots only. The ridge penalty
is chosen from ``alphas`` by mean per-gene PCC on the validation sections (when there are any), then the
model is refitted on training + validation spots.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from genedml.evaluation.metrics import nanmean, pearson_per_gene
from genedml.heads.base import Head, Section, spot_features


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
        with open(Path(directory) / "model.pkl", "wb") as fh:
            pickle.dump({"alpha": self.alpha, "model": self.model, "params": self.params}, fh)

    @classmethod
    def load(cls, directory: Path, params: dict) -> RidgeHead:
        with open(Path(directory) / "model.pkl", "rb") as fh:
            state = pickle.load(fh)
        head = cls(state["params"])
        head.alpha, head.model = state["alpha"], state["model"]
        return head
