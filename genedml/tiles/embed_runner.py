"""The device side of the embed engine: the encoder on CPU or GPU, fed batches of uint8 tiles.

Pixels go to the device as uint8 (pinned, non-blocking on CUDA) and are normalised there; the encoder runs
with bf16 / fp16 autocast and channels-last on GPU, and batch k's results come back while batch k+1 runs.
"""

from __future__ import annotations

import numpy as np

from genedml.tiles.encoders import Encoder


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def autocast_dtype(precision: str, device: str):
    import torch

    if precision == "auto":
        precision = "bf16" if device.startswith("cuda") else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_name(dtype) -> str:
    """The precision recorded in the store and its fingerprint: fp32, bfloat16 or float16."""
    return "fp32" if dtype is None else str(dtype).replace("torch.", "")


def token_count(encoder: Encoder, tile_px: int, device: str) -> int:
    """Output tokens per tile (197 for a ViT/16 at 224 px); an error when the encoder has no token output."""
    import torch

    with torch.inference_mode():
        probe = encoder.model.to(device).forward_features(torch.zeros(1, 3, tile_px, tile_px, device=device))
    if probe.ndim != 3:
        raise ValueError(
            f"encoder {encoder.name!r} gives no token sequence (forward_features shape "
            f"{tuple(probe.shape)}); cache_local_tokens needs a ViT-like encoder"
        )
    return int(probe.shape[1])


class EncoderRunner:
    """Runs batches of uint8 NHWC tiles through the encoder; results of batch k come back while k+1 runs.

    The caller fills ``batch()`` (a reusable host buffer: pinned on CUDA) and calls ``submit(n, dest)``,
    which returns the previous batch's (embeddings, local tokens, dest) or None; ``drain()`` the last one.
    On CPU everything is synchronous. On CUDA the pixels go up from two pinned buffers in turn
    (non-blocking) and the outputs come back into pinned host buffers guarded by events, so the GPU queue
    never waits for the host.
    """

    def __init__(self, encoder: Encoder, device: str, batch_size: int, tile_px: int, tokens: bool):
        import torch

        self.torch = torch
        self.device = device
        self.cuda = device.startswith("cuda")
        self.dtype = autocast_dtype(encoder.precision, device)
        self.tokens = tokens
        model = encoder.model.to(device)
        if self.cuda:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.mean = torch.tensor(encoder.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(encoder.std, device=device).view(1, 3, 1, 1) * 255.0)
        self.dim = encoder.embed_dim
        self.pending = None
        self.slot = 0
        n_buf = 2 if self.cuda else 1
        self.staging = [
            torch.empty((batch_size, tile_px, tile_px, 3), dtype=torch.uint8, pin_memory=self.cuda)
            for _ in range(n_buf)
        ]
        if self.cuda:
            self.host = [torch.empty((batch_size, self.dim), dtype=torch.float32, pin_memory=True) for _ in range(2)]
            self.host_tok = [None, None]
            self.events = [torch.cuda.Event(), torch.cuda.Event()]

    def batch(self):
        """The host buffer to fill with the next batch's tiles (N, H, W, 3) uint8."""
        return self.staging[self.slot]

    def _forward(self, x):
        torch = self.torch
        x = x.permute(0, 3, 1, 2)  # NHWC uint8 viewed as NCHW: channels-last strides, no copy
        x = x.to(torch.float32, memory_format=torch.channels_last)
        x = (x - self.mean) * self.inv_std
        with torch.autocast(
            device_type="cuda" if self.cuda else "cpu", dtype=self.dtype, enabled=self.dtype is not None
        ):
            if self.tokens:
                toks = self.model.forward_features(x)
                return self.model.forward_head(toks), toks
            return self.model(x), None

    def submit(self, n: int, dest: np.ndarray):
        torch = self.torch
        local_rows = np.flatnonzero(dest[:, 3] == 1) if self.tokens else None
        if not self.cuda:
            emb, toks = self._forward(self.staging[0][:n])
            tok = toks[torch.from_numpy(local_rows)].to(torch.float16).numpy() if toks is not None else None
            return emb.float().numpy(), tok, dest
        k = self.slot
        self.slot ^= 1
        x = self.staging[k][:n].to(self.device, non_blocking=True)
        emb, toks = self._forward(x)
        self.host[k][:n].copy_(emb.float(), non_blocking=True)
        n_tok = 0
        if toks is not None:
            n_tok = len(local_rows)
            sel = toks[torch.from_numpy(local_rows).to(self.device)].to(torch.float16)
            buf = self.host_tok[k]
            if buf is None or buf.shape[0] < n_tok or buf.shape[1:] != sel.shape[1:]:
                buf = self.host_tok[k] = torch.empty(
                    (len(self.staging[k]), *sel.shape[1:]), dtype=torch.float16, pin_memory=True
                )
            buf[:n_tok].copy_(sel, non_blocking=True)
        self.events[k].record()
        previous, self.pending = self.pending, (k, n, n_tok, dest)
        result = self._collect(previous)
        # the buffer filled next was uploaded two batches ago; its event (just waited for) covers that
        return result

    def _collect(self, pending):
        if pending is None:
            return None
        k, n, n_tok, dest = pending
        self.events[k].synchronize()
        emb = self.host[k][:n].numpy().copy()
        tok = self.host_tok[k][:n_tok].numpy().copy() if self.tokens else None
        return emb, tok, dest

    def drain(self):
        if not self.cuda:
            return None
        pending, self.pending = self.pending, None
        return self._collect(pending)
