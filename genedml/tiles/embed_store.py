"""The cache side of the embed engine: the partial store, its fingerprint, resuming and unit buffers.

The store is built under ``.{name}.partial-{fingerprint}.zarr`` (a name nothing reads) in chunk-sized
units of work, each marked done in ``progress`` after its data is written; ``complete`` is set and the
store renamed into place only at the end. A rerun resumes a partial store whose fingerprint (geometry,
slide, encoder, precision, format) matches and discards any other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from genedml.atomic import move_into_place, remove_path
from genedml.tiles.embed_plan import Unit
from genedml.tiles.encoders import Encoder
from genedml.tiles.features import FORMAT_VERSION, StoreLayout, create_store
from genedml.tiles.geometry import Geometry

# the whole engine logs under the driver's name, the one users know
log = logging.getLogger("genedml.tiles.embed")


class UnitBuffers:
    """Rows of the units in flight; a unit is written to the store once all its tiles are in."""

    def __init__(self, store, units: list[Unit], layout: StoreLayout, done: np.ndarray):
        self.store = store
        self.units = units
        self.layout = layout
        self.done = done
        self.remaining = np.array([0 if done[u] else unit.n_tiles for u, unit in enumerate(units)])
        self.buffers: dict[int, dict] = {}
        self.next = 0

    def _buffer(self, u: int) -> dict:
        if u not in self.buffers:
            unit, d, t = self.units[u], self.layout.dim, self.layout.n_tiles
            rows = unit.hi - unit.lo
            if unit.kind == "nodes":
                buf = {"grid_tiles": np.zeros((rows, d), np.float32)}
            else:
                v, k = self.layout.n_views, self.layout.n_tokens
                buf = {"local": np.zeros((rows, d), np.float32)}
                if v > 1:
                    buf["local_views"] = np.zeros((rows, v, d), np.float32)
                if unit.kind == "spots":
                    buf["neighbour"] = np.zeros((rows, t, d), np.float32)
                if k:
                    buf["local_tokens"] = np.zeros((rows, v, k, d) if v > 1 else (rows, k, d), np.float16)
            self.buffers[u] = buf
        return self.buffers[u]

    def put(self, emb: np.ndarray, tokens: np.ndarray | None, dest: np.ndarray) -> None:
        local_pos = np.cumsum(dest[:, 3]) - 1  # row of each local tile in ``tokens``
        for u in np.unique(dest[:, 0]):
            sel = dest[:, 0] == u
            buf = self._buffer(int(u))
            rows, slots, is_local, views = dest[sel, 1], dest[sel, 2], dest[sel, 3] == 1, dest[sel, 4]
            e = emb[sel]
            if "grid_tiles" in buf:
                buf["grid_tiles"][rows] = e
            else:
                identity = is_local & (views == 0)
                buf["local"][rows[identity]] = e[identity]
                if "local_views" in buf:
                    buf["local_views"][rows[is_local], views[is_local]] = e[is_local]
                if "neighbour" in buf:
                    nb = slots >= 0
                    buf["neighbour"][rows[nb], slots[nb]] = e[nb]
                if tokens is not None and "local_tokens" in buf:
                    tok = tokens[local_pos[sel][is_local]]
                    if self.layout.n_views > 1:
                        buf["local_tokens"][rows[is_local], views[is_local]] = tok
                    else:
                        buf["local_tokens"][rows[is_local]] = tok
            self.remaining[u] -= int(sel.sum())
        self.flush()

    def flush(self) -> int:
        """Write every finished unit, in order; return how many units are done."""
        while self.next < len(self.units) and self.remaining[self.next] == 0:
            u = self.next
            if not self.done[u]:
                self._write(u)
            self.buffers.pop(u, None)
            self.next += 1
        return self.next

    def _write(self, u: int) -> None:
        unit = self.units[u]
        buf = self._buffer(u)
        if unit.kind == "locals" and len(unit.copy_rows):
            buf["local"][unit.copy_rows] = self.store["grid_tiles"].get_orthogonal_selection(
                (unit.copy_nodes, slice(None))
            )
        for name, values in buf.items():
            self.store[name][unit.lo : unit.hi] = values.astype(np.float16)
        self.store["progress"][u] = True  # after the data: a unit marked done is on disk
        self.done[u] = True


def _hash_geometry(g: Geometry) -> str:
    h = hashlib.sha256()
    for arr in (g.centres, g.neighbour_mask, g.neighbour_centres, g.grid_nodes, g.neighbour_index):
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    h.update("\n".join(g.barcodes.astype(str)).encode())
    h.update(json.dumps([g.scale, g.spec.describe(), list(g.slide_dims)], sort_keys=True).encode())
    return h.hexdigest()


def _slide_identity(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def store_fingerprint(g: Geometry, encoder: Encoder, precision: str, n_tokens: int, layout: StoreLayout) -> str:
    """SHA-256 of everything the store's contents depend on: a partial store resumes only when it matches."""
    return hashlib.sha256(
        json.dumps(
            {
                "format": FORMAT_VERSION,
                "geometry": _hash_geometry(g),
                "slide": _slide_identity(g.slide_path),
                "encoder": encoder.identity(),
                "precision": precision,
                "tokens": n_tokens,
                "views": layout.n_views,
                "chunks": [layout.spot_rows, layout.node_rows, layout.token_rows],
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()


def partial_path(out: Path, fingerprint: str) -> Path:
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f".{stem}.partial-{fingerprint[:16]}{out.suffix}")


def remove_stale_partials(out: Path, keep: Path) -> None:
    """Remove every partial store of ``out`` but ``keep``: one of other settings can never be resumed."""
    stem = keep.name.split(".partial-")[0]
    for stale in out.parent.glob(f"{stem}.partial-*") if out.parent.exists() else []:
        if stale != keep:
            log.info("removing stale partial store %s", stale)
            remove_path(stale)


def open_partial(path: Path, fingerprint: str, n_units: int):
    """The partial store at ``path`` and its done units, or None when absent, foreign or unreadable."""
    import zarr

    if not path.exists():
        return None
    try:
        group = zarr.open_group(str(path), mode="r+")
        if group.attrs.get("fingerprint") != fingerprint or group.attrs.get("units") != n_units:
            return None
        return group, np.asarray(group["progress"][:], dtype=bool)
    except Exception as exc:  # a store cut off mid-write: start again
        log.warning("partial store %s is unreadable (%s); starting again", path, exc)
        return None


def _create_partial(path: Path, g: Geometry, layout: StoreLayout, fingerprint: str, n_units: int):
    """A new partial store with the geometry's arrays written and no unit done."""
    remove_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = create_store(path, layout, {"fingerprint": fingerprint, "units": n_units, "complete": False})
    store.create_array("progress", shape=(n_units,), chunks=(1,), dtype="bool", fill_value=False)
    store["barcodes"][:] = g.barcodes.astype(str)
    store["spatial"][:] = g.centres
    store["array_coords"][:] = g.array_coords
    store["neighbour_mask"][:] = g.neighbour_mask
    if g.spec.neighbour_mode == "grid":
        store["neighbour_index"][:] = g.neighbour_index
        store["grid_tile_centres"][:] = g.grid_nodes
    return store, np.zeros(n_units, bool)


def resume_or_create(out: Path, g: Geometry, layout: StoreLayout, fingerprint: str, n_units: int):
    """(partial store, done units, its path): the matching partial store of ``out`` resumed, or a new one."""
    path = partial_path(out, fingerprint)
    remove_stale_partials(out, path)
    opened = open_partial(path, fingerprint, n_units)
    if opened is None:
        return (*_create_partial(path, g, layout, fingerprint, n_units), path)
    store, done = opened
    log.info("%s: resuming %s (%d of %d units already written)", g.sample, path, int(done.sum()), n_units)
    return store, done, path


def finish_store(store, facts: dict, path: Path, out: Path) -> None:
    """Record the run facts, mark the store complete and rename it into place as ``out``."""
    store.attrs.update(facts)
    del store["progress"]
    store.attrs["complete"] = True
    move_into_place(path, out)
