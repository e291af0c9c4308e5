"""On-disk embedding cache keyed by model weights, file list and extraction settings.

A cache entry is ``<folder>/<model id[:16]>/<set name>-<key[:16]>.npz`` holding the
embeddings, the file list and the full key. The key hashes the model fingerprint
(:func:`model_fingerprint`: every tensor of the inference modules), the ordered file
list with each file's size and modification time, and the extraction settings. Any
change gives a new key, hence a miss: a cache can never be reused for another model,
another list or other settings. Entries are never evicted automatically; delete the
folder to reclaim space.
"""

import hashlib
import json
import os

import numpy as np
import torch

from sslsv_sb.errors import SSLSVError


def model_fingerprint(modules):
    """SHA-256 of the classes, parameter/buffer names, dtypes, shapes and values.

    Arguments
    ---------
    modules : sequence of torch.nn.Module
        E.g. :meth:`SSLBrain.inference_modules`.

    Returns
    -------
    str
        64 hex digits.
    """
    h = hashlib.sha256()
    for m in modules:
        m = m.module if hasattr(m, "module") else m
        h.update(f"{type(m).__module__}.{type(m).__qualname__}".encode())
        for name, t in sorted(m.state_dict().items()):
            if not isinstance(t, torch.Tensor):
                h.update(f"{name}={t!r}".encode())
                continue
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(
                t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            )
    return h.hexdigest()


def _files_digest(paths):
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()


class EmbeddingCache:
    """Embedding cache for one model in one folder.

    Arguments
    ---------
    folder : str
        Cache root (e.g. ``<run>/embeddings_cache``).
    model_id : str or None
        :func:`model_fingerprint`; None disables the cache (every lookup misses).
    settings : dict
        Extraction settings (JSON-serialisable) that change embeddings.
    """

    def __init__(self, folder, model_id, settings):
        self.folder = folder
        self.model_id = model_id
        self.settings = json.dumps(settings, sort_keys=True, default=str)
        self.hits, self.misses = [], []

    def key(self, paths):
        """Full hex key of a file list (ordered) under this model and settings."""
        h = hashlib.sha256()
        h.update(str(self.model_id).encode())
        h.update(self.settings.encode())
        h.update(_files_digest(paths).encode())
        return h.hexdigest()

    def _path(self, name, key):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return os.path.join(self.folder, self.model_id[:16], f"{safe}-{key[:16]}.npz")

    def load(self, name, paths):
        """Cached ``(len(paths), D)`` embeddings, or None (a miss)."""
        if self.model_id is None:
            self.misses.append(name)
            return None
        key = self.key(paths)
        path = self._path(name, key)
        if os.path.isfile(path):
            try:
                with np.load(path, allow_pickle=False) as z:
                    ok = str(z["key"]) == key and list(z["files"]) == list(paths)
                    emb = z["emb"] if ok else None
            except (OSError, ValueError, KeyError) as err:
                raise SSLSVError(
                    f"{path}: corrupt embedding cache ({err}); delete it"
                ) from err
            if emb is not None:
                self.hits.append(name)
                return emb
        self.misses.append(name)
        return None

    def save(self, name, paths, emb):
        """Store embeddings of ``paths`` (atomic write)."""
        if self.model_id is None:
            return None
        key = self.key(paths)
        path = self._path(name, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path[: -len(".npz")] + ".tmp.npz"
        np.savez(tmp, emb=np.asarray(emb, np.float32), files=np.asarray(paths), key=key)
        os.replace(tmp, path)
        return path
