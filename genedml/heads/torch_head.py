"""The shared training loop of every neural head, on cached features held in memory.

A fold's per-spot vectors are loaded once (``Section`` objects) and turned into tensors once; the neighbour
tiles and token maps of a section loaded lazily (``load_features(lazy=True)``, what the train stage does) stay
on disk and are read per batch (``Batch.neighbour``, ``Batch.local_tokens``: on first use, chunks in order), so a
fold's memory is set by the batch and the feature cache budget, not by the dataset. Local views are kept as
stored (float16 when lazy) and cast per batch. ``batching: section`` (default) makes batches of spots of one section (``Batch.section``,
``Batch.index``); ``batching: mixed`` draws batches across all training sections, as the reference code
does (contrastive negatives then come from every section). Either way ``Batch.groups`` lists
``(section, rows)`` for every section in the batch, in the order of the batch's rows, so a head that needs
a section's global context (all of its spots and their grid coordinates) has it.

Training: Adam (lr 1e-4), StepLR(step 20, gamma 0.95), fixed seeds, bf16 autocast on GPU. After each
epoch the model is scored on the selection sections (mean per-gene Pearson r, per section, averaged);
the best epoch is kept and training stops after ``patience`` epochs without improvement. Which sections
select is the protocol's business (``genedml.heads.train``): the inner validation patients (``honest``)
or the test fold (``reference``); with none, the last epoch is kept. A non-finite loss stops training
with an error naming the head, the fold and the epoch. Per-epoch losses and the selection PCC go to
``history.csv`` next to the checkpoint.

The checkpoint ``model.pt`` holds tensors and plain Python values only and is read with
``torch.load(weights_only=True)``; a file that needs full unpickling (an older genedml's, or a crafted one)
is refused (``UnsafeModelFile``), never loaded.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genedml.errors import InputError
from genedml.evaluation.metrics import nanmean, pearson_per_gene
from genedml.heads.base import Head, Section
from genedml.heads.inputs import batch_views, check_choice

log = logging.getLogger(__name__)

TRAIN_DEFAULTS = {
    "epochs": 100,
    "batch_size": 256,
    "lr": 1e-4,
    "weight_decay": 0.0,
    "step_size": 20,
    "gamma": 0.95,
    "patience": 20,
    "device": "auto",
    "amp": True,
    "eval_batch_size": 1024,
    "batching": "section",  # batches of one section, or mixed across sections
    "log_every": 1,  # epochs between log lines
    # features with several dihedral views of the local crop (encoder.local_views): training draws one per
    # spot per epoch (random) or keeps the identity; evaluation always uses the identity (heads.inputs.CHOICES)
    "train_views": "random",
}


@dataclass
class SectionTensors:
    """One section's cached features as tensors (on the training device)."""

    sample: str
    local: object  # (N, D) float32
    neighbour: object  # (N, T, D) float32 tensor, or a lazy ``tiles.features.NeighbourTiles`` (read per batch)
    neighbour_mask: object  # (N, T) bool
    targets: object  # (N, G) float32 or None
    local_tokens: object = None  # lazy token maps (tiles.features.TokenMaps, shape (N, K, D)): read per batch
    array_coords: object = None  # (N, 2) numpy array (row, col) as stored
    spatial: object = None  # (N, 2) numpy pixel centres
    local_views: object = None  # (N, V, D) dihedral views of the local crop (V > 1; float16 if lazy), or None
    spot_images: object = None  # (N, px, px, 3) uint8 tensor of the local crops (a trainable image encoder), or None
    _coords: object = None

    @property
    def n_spots(self) -> int:
        return int(self.local.shape[0])

    @property
    def n_views(self) -> int:
        return 1 if self.local_views is None else int(self.local_views.shape[1])

    def neighbour_rows(self, index):
        """(B, T, D) float32 neighbour tiles of rows ``index`` on the device (read from the store if lazy)."""
        import torch

        if isinstance(self.neighbour, torch.Tensor):
            return self.neighbour[index]
        rows = np.asarray(index.cpu() if hasattr(index, "cpu") else index).reshape(-1)
        # gathered as float16 (half the bytes to move), cast by torch (numpy's float16 casts are slow)
        return torch.from_numpy(self.neighbour.read(rows)).to(self.local.device).float()

    @property
    def coords(self):
        """(N, 2) long grid (row, col) on the device: the array coordinates, or a grid derived from the
        pixel centres when those are missing (computed on first use: only heads with a global scale ask)."""
        if self._coords is None:
            import torch

            from genedml.networks.context import grid_positions

            self._coords = torch.as_tensor(
                grid_positions(self.array_coords, self.spatial, self.sample), dtype=torch.long, device=self.local.device
            )
        return self._coords


_UNREAD = object()  # Batch._tokens before the token maps are first asked for


@dataclass
class Batch:
    section: SectionTensors | None  # the batch's section (None for a mixed batch)
    index: object  # (B,) long rows of ``section`` (None for a mixed batch)
    local: object  # (B, D): the CLS embedding, of each row's view
    _neighbour: object  # (B, T, D) float, or _UNREAD: gathered from ``groups`` on first use (``neighbour``)
    neighbour_mask: object
    targets: object  # (B, G) or None
    groups: list = field(default_factory=list)  # [(SectionTensors, rows)] in the order of the batch's rows
    views: object = None  # (B,) numpy: the dihedral view of each row (None: the identity, view 0)
    pixel_views: object = None  # (B,) numpy: each row's dihedral view of its spot image (None: identity)
    _tokens: object = _UNREAD
    _pixels: object = _UNREAD

    @property
    def size(self) -> int:
        return int(self.local.shape[0])

    @property
    def neighbour(self):
        """(B, T, D) float neighbour tiles of the rows on the device; read on first use (from the stores when
        the sections are lazy), so a head that never asks (stnet on ``local``) reads nothing."""
        if self._neighbour is _UNREAD:
            import torch

            self._neighbour = torch.cat([st.neighbour_rows(rows) for st, rows in self.groups])
        return self._neighbour

    @neighbour.setter
    def neighbour(self, value):
        self._neighbour = value

    @property
    def local_tokens(self):
        """(B, K, D) float token maps of the rows (in their views) on the device, or None without any; read
        from the feature stores on first use, so a head that never asks reads nothing."""
        if self._tokens is _UNREAD:
            self._tokens = _stream_tokens(self.groups, self.views, self.local.device)
        return self._tokens

    @property
    def spot_pixels(self):
        """(B, 3, px, px) uint8 spot images of the rows in their ``pixel_views`` on the device, or None when
        the sections carry none (gathered on first use)."""
        if self._pixels is _UNREAD:
            self._pixels = _gather_pixels(self.groups, self.pixel_views, self.local.device)
        return self._pixels


def _stream_tokens(groups: list, views, device):
    """Each group's rows of its section's token maps (sorted unique rows read, then reordered), as float."""
    import torch

    if not groups or any(st.local_tokens is None for st, _ in groups):
        return None
    out, lo = [], 0
    for st, rows in groups:
        rows = np.asarray(rows.cpu() if hasattr(rows, "cpu") else rows).reshape(-1)
        part = None if views is None else views[lo : lo + len(rows)]
        lo += len(rows)
        out.append(torch.from_numpy(st.local_tokens.read(rows, part)))
    return torch.cat(out).to(device).float()


def _gather_pixels(groups: list, views, device):
    """Each group's rows of its section's spot images, channels first, in the rows' dihedral views."""
    import torch

    from genedml.networks.spot_encoder import dihedral_pixels

    if not groups or any(st.spot_images is None for st, _ in groups):
        return None
    parts = [st.spot_images[rows.to(st.spot_images.device)] for st, rows in groups]
    pixels = torch.cat(parts).to(device, non_blocking=True).permute(0, 3, 1, 2)
    return dihedral_pixels(pixels, views)


# a spot image is drawn in one of the 8 dihedral views (flips and 90-degree rotations) per spot and epoch
PIXEL_VIEWS = 8


def section_tensors(section: Section, device) -> SectionTensors:
    import torch

    from genedml.tiles.features import NeighbourTiles, TokenMaps

    f = section.features
    tokens = f.token_maps() if hasattr(f, "token_maps") else None
    if tokens is None and getattr(f, "local_tokens", None) is not None:
        tokens = TokenMaps(f.local_tokens, getattr(f, "token_rows", None), section.sample)
    views = getattr(f, "local_views", None)
    lazy = isinstance(f.neighbour, NeighbourTiles)
    return SectionTensors(
        section.sample,
        torch.as_tensor(f.local, dtype=torch.float32, device=device),
        f.neighbour if lazy else torch.as_tensor(f.neighbour, dtype=torch.float32, device=device),
        torch.as_tensor(f.neighbour_mask, dtype=torch.bool, device=device),
        None if section.targets is None else torch.as_tensor(section.targets, dtype=torch.float32, device=device),
        tokens,  # stays on disk: streamed per batch
        np.asarray(f.array_coords),
        np.asarray(f.spatial),
        # float16 views (lazy features) stay float16: half the memory, cast per batch (same values)
        None if views is None else torch.as_tensor(views, dtype=_view_type(views), device=device),
        None if getattr(f, "spot_images", None) is None else torch.as_tensor(f.spot_images).to(device),
    )


def _view_type(views):
    import torch

    return torch.float16 if getattr(views, "dtype", None) in (np.float16, torch.float16) else torch.float32


def make_batch(st: SectionTensors, index, rng: np.random.Generator | None = None) -> Batch:
    """A batch of rows ``index`` of one section. With ``rng`` (training, ``train_views: random``) and
    several views in the features, each row gets a random view (CLS and token map alike); else view 0."""
    import torch

    views = None
    if rng is not None and st.n_views > 1:
        views = rng.integers(st.n_views, size=len(index))
        local = st.local_views[index, torch.as_tensor(views, device=st.local_views.device)].float()
    else:
        local = st.local[index]
    pixel_views = None
    if rng is not None and st.spot_images is not None:
        pixel_views = rng.integers(PIXEL_VIEWS, size=len(index))
    return Batch(
        st,
        index,
        local,
        _UNREAD,  # the neighbour tiles are read when the head asks (Batch.neighbour)
        st.neighbour_mask[index],
        None if st.targets is None else st.targets[index],
        [(st, index)],
        views,
        pixel_views,
    )


def make_mixed_batch(parts: list, rng: np.random.Generator | None = None) -> Batch:
    """A batch of rows from several sections: ``parts`` = [(SectionTensors, rows)]; ``rng`` as ``make_batch``."""
    import torch

    if len(parts) == 1:
        return make_batch(*parts[0], rng=rng)
    batches = [make_batch(st, rows, rng) for st, rows in parts]

    def cat(attr):
        values = [getattr(b, attr) for b in batches]
        if any(v is None for v in values):
            return None
        return torch.cat(values)

    def cat_views(attr):
        if all(getattr(b, attr) is None for b in batches):
            return None
        return np.concatenate(
            [np.zeros(b.size, np.int64) if getattr(b, attr) is None else getattr(b, attr) for b in batches]
        )

    return Batch(
        None,
        None,
        cat("local"),
        _UNREAD,  # read per section on first use, in the order of ``parts``
        cat("neighbour_mask"),
        cat("targets"),
        list(parts),
        cat_views("views"),
        cat_views("pixel_views"),
    )


def training_views(train: list, views: list[str], block: int = 4096):
    """The views of every training spot, (N, len(views) * D), for fitting an input normalisation; a block of
    spots at a time, so lazy neighbours are never read whole (each row's view does not depend on the block)."""
    import torch

    return torch.cat(
        [
            batch_views(make_batch(st, torch.arange(lo, min(lo + block, st.n_spots), device=st.local.device)), views)
            for st in train
            for lo in range(0, st.n_spots, block)
        ]
    )


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss (``genedml.heads.train`` adds the head and the fold)."""


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class TorchHead(Head):
    """Subclasses implement ``build_model`` and ``loss``; ``predict_batch`` defaults to ``model(batch)``."""

    kind = "torch"

    @classmethod
    def known_settings(cls) -> dict:
        return {**cls.COMMON, **TRAIN_DEFAULTS, **cls.defaults}

    def __init__(self, params: dict, seed: int = 0):
        super().__init__(params, seed)
        self.model = None
        self.history: list[dict] = []
        self.dims: dict = {}
        self.spot_facts: dict | None = None  # the trainable spot-image encoder's facts (inputs.init_spot_encoder)

    # --- to implement -------------------------------------------------------------------------
    def build_model(self, dims: dict):
        """Return an ``nn.Module``; ``dims`` has local_dim, neighbour_tiles, n_genes."""
        raise NotImplementedError

    def loss(self, model, batch: Batch, epoch: int) -> tuple[object, dict]:
        """Training loss of one batch and its named parts (floats) for the history."""
        raise NotImplementedError

    def predict_batch(self, model, batch: Batch):
        return model(batch)

    def init_model(self, model, train: list[SectionTensors]) -> None:
        """Called once after ``build_model`` with the training tensors (e.g. to set output biases)."""

    # --- shared machinery ---------------------------------------------------------------------
    def device(self) -> str:
        import torch

        want = self.params["device"]
        return ("cuda" if torch.cuda.is_available() else "cpu") if want == "auto" else want

    def _autocast(self, device: str):
        import contextlib

        import torch

        if device == "cuda" and self.params["amp"]:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batches(
        self, sections: list[SectionTensors], rng: np.random.Generator, shuffle: bool, size: int, mixed: bool = False
    ):
        import torch

        # training batches (shuffled) draw a view per spot; evaluation keeps the identity
        check_choice("train_views", self.params.get("train_views", "random"))
        draw = rng if shuffle and self.params.get("train_views", "random") == "random" else None
        if mixed and shuffle and len(sections) > 1:
            # one permutation of every training spot; each batch is then split by section
            owner = np.concatenate([np.full(st.n_spots, si) for si, st in enumerate(sections)])
            row = np.concatenate([np.arange(st.n_spots) for st in sections])
            order = rng.permutation(len(owner))
            for lo in range(0, len(order), size):
                chunk = order[lo : lo + size]
                parts = []
                for si in np.unique(owner[chunk]):
                    rows = row[chunk[owner[chunk] == si]]
                    st = sections[si]
                    parts.append((st, torch.as_tensor(rows, device=st.local.device)))
                yield make_mixed_batch(parts, draw)
            return
        plan = []
        for si, st in enumerate(sections):
            order = rng.permutation(st.n_spots) if shuffle else np.arange(st.n_spots)
            for lo in range(0, st.n_spots, size):
                plan.append((si, order[lo : lo + size]))
        if shuffle:
            rng.shuffle(plan)
        for si, rows in plan:
            st = sections[si]
            yield make_batch(st, torch.as_tensor(np.sort(rows) if not shuffle else rows, device=st.local.device), draw)

    def _predict_tensors(self, st: SectionTensors) -> np.ndarray:
        import torch

        self.model.eval()
        out = []
        size = int(self.params["eval_batch_size"])
        if self.needs_spot_images(self.params):  # a CNN over the pixels: activations grow with the batch
            size = min(size, int(self.params["batch_size"]))
        with torch.inference_mode(), self._autocast(st.local.device.type):
            for batch in self._batches([st], np.random.default_rng(0), False, size):
                out.append(self.predict_batch(self.model, batch).float().cpu())
        return torch.cat(out).numpy()

    def _score(self, sections: list[SectionTensors]) -> float:
        scores = []
        for st in sections:
            pred = self._predict_tensors(st)
            scores.append(nanmean(pearson_per_gene(st.targets.cpu().numpy(), pred)))
        return nanmean(scores)

    def fit(self, train: list[Section], val: list[Section]) -> dict:
        """``val``: the sections that choose the epoch (none: the last epoch is kept)."""
        import torch

        seed_everything(self.seed)
        device = self.device()
        p = self.params
        check_choice("batching", p["batching"])
        tr = [section_tensors(s, device) for s in train]
        sel = [section_tensors(s, device) for s in val]
        if not sel:
            log.warning("no selection sections: keeping the last epoch")
        self.dims = {
            "local_dim": int(tr[0].local.shape[1]),
            "neighbour_tiles": int(tr[0].neighbour.shape[1]),
            "n_genes": int(tr[0].targets.shape[1]),
            "local_tokens": 1 if tr[0].local_tokens is None else int(tr[0].local_tokens.shape[1]),
        }
        self.model = self.build_model(self.dims).to(device)
        self.init_model(self.model, tr)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        n_params = sum(int(t.numel()) for t in self.model.parameters() if t.requires_grad)
        n_spots = sum(st.n_spots for st in tr)
        log.info(
            "%s: %d trainable parameters, %d training spots in %d sections, batching %s, device %s",
            self.kind,
            n_params,
            n_spots,
            len(tr),
            p["batching"],
            device,
        )
        t_start = time.perf_counter()
        best, best_epoch = self._train_epochs(tr, sel, device)
        mean_epoch_s = np.mean([h["train_s"] for h in self.history])
        extra = {}
        if self.spot_facts is not None:
            one = tr[0].spot_images[0]  # uint8: one byte an element
            extra["spot_encoder"] = {**self.spot_facts, "px": int(one.shape[0]), "bytes_per_spot": int(one.numel())}
        return {
            **extra,
            "best_epoch": best_epoch,
            "best_selection_pcc": best,
            "epochs_run": len(self.history),
            "train_spots": n_spots,
            "fit_s": round(time.perf_counter() - t_start, 2),
            "n_params": n_params,
            "s_per_epoch_per_1k_spots": round(mean_epoch_s / max(n_spots, 1) * 1000, 4),
            "peak_gpu_mem_mb": _peak_gpu_mb(device),
        }

    def _train_epochs(self, tr: list[SectionTensors], sel: list[SectionTensors], device: str) -> tuple[float, int]:
        """Adam + StepLR epochs with early stopping on ``sel``; the best epoch's weights are kept."""
        import torch

        p = self.params
        opt = torch.optim.Adam(self.model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=int(p["step_size"]), gamma=float(p["gamma"]))
        rng = np.random.default_rng(self.seed)
        n_spots = sum(st.n_spots for st in tr)
        best, best_epoch, best_state, waited = -np.inf, -1, None, 0
        for epoch in range(int(p["epochs"])):
            t0 = time.perf_counter()
            losses = self._train_one_epoch(tr, rng, opt, device, epoch)
            sched.step()
            train_s = time.perf_counter() - t0
            score = self._score(sel) if sel else float("nan")
            self.history.append(
                {
                    "epoch": epoch,
                    **losses,
                    "selection_pcc": score,
                    "lr": opt.param_groups[0]["lr"],
                    "train_s": round(train_s, 3),
                    "s_per_epoch_per_1k_spots": round(train_s / max(n_spots, 1) * 1000, 4),
                }
            )
            if not sel or (np.isfinite(score) and score > best):
                best, best_epoch, waited = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                waited += 1
            if epoch % max(1, int(p["log_every"])) == 0:
                log.info(
                    "epoch %d: loss %.4f, selection PCC %.4f (best %.4f @ %d), %.1f s",
                    epoch,
                    losses.get("loss", float("nan")),
                    score,
                    best,
                    best_epoch,
                    train_s,
                )
            if sel and waited >= int(p["patience"]):
                log.info("early stop at epoch %d (no improvement for %d epochs)", epoch, waited)
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return best, best_epoch

    def _train_one_epoch(self, tr: list[SectionTensors], rng, opt, device: str, epoch: int) -> dict[str, float]:
        """One pass over the training spots; the mean of each named loss part over the batches."""
        import torch

        self.model.train()
        sums: dict[str, float] = {}
        n_batches = 0
        mixed = self.params["batching"] == "mixed"
        for batch in self._batches(tr, rng, True, int(self.params["batch_size"]), mixed=mixed):
            with self._autocast(device):
                loss, parts = self.loss(self.model, batch, epoch)
            if not bool(torch.isfinite(loss.detach())):
                named = ", ".join(f"{k} {float(v):.4g}" for k, v in parts.items())
                raise NonFiniteLoss(f"{self.kind}: non-finite training loss at epoch {epoch} ({named})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n_batches += 1
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        return {k: v / max(n_batches, 1) for k, v in sums.items()}

    def predict(self, section: Section) -> np.ndarray:
        return self._predict_tensors(section_tensors(section, self.device())).astype(np.float32)

    def save(self, directory: Path) -> None:
        """``model.pt``: the state dict (tensors) and plain Python facts only, so that ``load`` reads it with
        ``torch.load(weights_only=True)``. Settings or sizes of other types go to ``model_meta.json``."""
        import pandas as pd
        import torch

        directory = Path(directory)
        state = {"state_dict": self.model.state_dict(), "seed": int(self.seed), "kind": self.kind}
        meta_path = directory / MODEL_META
        if _is_plain(self.dims) and _is_plain(self.params):
            state.update(dims=self.dims, params=self.params)
            meta_path.unlink(missing_ok=True)
        else:
            meta = {"dims": self.dims, "params": self.params}
            meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_value))
            state["meta_file"] = MODEL_META
        torch.save(state, directory / MODEL_FILE)
        pd.DataFrame(self.history).to_csv(directory / "history.csv", index=False)
        (directory / "params.json").write_text(json.dumps(self.params, indent=2, sort_keys=True, default=str))

    @classmethod
    def load(cls, directory: Path, params: dict | None = None) -> TorchHead:
        path = Path(directory) / MODEL_FILE
        state = load_weights_only(path)
        if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
            raise InputError("not a genedml model file (no state_dict)", None, path)
        if state.get("kind", cls.kind) != cls.kind:
            raise InputError(f"a {state['kind']} model, not a {cls.kind} one", None, path)
        if "meta_file" in state:
            meta_path = Path(directory) / MODEL_META
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise InputError(
                    f"the model's settings cannot be read ({e}; rerun the train step)", None, meta_path
                ) from e
            dims, settings = meta.get("dims"), meta.get("params")
        else:
            dims, settings = state.get("dims"), state.get("params")
        if not isinstance(dims, dict) or not isinstance(settings, dict):
            raise InputError("the model file lacks its sizes (dims) or settings (params)", None, path)
        head = cls(settings, seed=int(state.get("seed", 0)))
        head.dims = dims
        head.model = head.build_model(head.dims)
        head.model.load_state_dict(state["state_dict"])
        head.model.to(head.device())
        return head


MODEL_FILE = "model.pt"
MODEL_META = "model_meta.json"  # a head's sizes and settings when they are not plain Python values

UNSAFE_FORMAT = (
    "this model file is in a format that can execute code when loaded (a Python pickle), so genedml no "
    "longer loads it; retrain the head (rerun the train step) to write a safe model file"
)


class UnsafeModelFile(InputError):
    """A fold model written by an older genedml (a pickle, or a ``model.pt`` that weights-only loading
    refuses): never loaded, since loading it could execute code."""

    def __init__(self, path):
        super().__init__(UNSAFE_FORMAT, None, path)


def load_weights_only(path: Path):
    """``torch.load(path, weights_only=True)`` on the CPU; a file that needs more (arbitrary pickled objects)
    raises ``UnsafeModelFile`` and is never loaded any other way."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError("the model file is missing (rerun the train step)", None, path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeModelFile(path) from e


_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _is_plain(value) -> bool:
    """Whether ``value`` is made of str, int, float, bool, None, lists, tuples and dicts only (what
    weights-only loading accepts besides tensors)."""
    if type(value) in _PLAIN_SCALARS:
        return True
    if type(value) in (list, tuple):
        return all(_is_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) in _PLAIN_SCALARS and _is_plain(v) for k, v in value.items())
    return False


def _json_value(value):
    """A JSON value for a setting of another type (numpy scalars and arrays, paths, anything else as text)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _peak_gpu_mb(device: str) -> float | None:
    import torch

    if device != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)
