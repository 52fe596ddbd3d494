"""CKKS keys: make, save and load TenSEAL contexts, and fingerprint the key they hold.

The secret context (``secret.ctx``) goes to the clients, the public one (``public.ctx``: the
parameters and the public key, no secret key) to the server; :func:`key_id` names the key pair.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import weakref
from pathlib import Path

import tenseal as ts

from fedicd.errors import ConfigError
from fedicd.secure.ckks_params import CkksParams

__all__ = ["as_context", "key_id", "load_context", "make_keys", "save_keys"]


def make_keys(params: CkksParams | None = None) -> tuple[bytes, bytes]:
    """Make a fresh TenSEAL CKKS context; return (secret context bytes, public context bytes).

    Both carry the public key (the server uses it only to fingerprint the key, see :func:`key_id`);
    neither carries relinearisation or Galois keys (addition only). The public one is serialised
    with ``save_secret_key=False``: ``is_private()`` is False and nothing can be decrypted with it.
    """
    params = params or CkksParams()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                     coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                     encryption_type=ts.ENCRYPTION_TYPE.ASYMMETRIC)
    ctx.global_scale = params.scale
    common = {"save_public_key": True, "save_galois_keys": False, "save_relin_keys": False}
    return ctx.serialize(save_secret_key=True, **common), ctx.serialize(save_secret_key=False, **common)


def save_keys(directory: str | Path, params: CkksParams | None = None, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a fresh key pair as ``secret.ctx`` (mode 0600) and ``public.ctx`` in ``directory``.

    Returns the two paths. Refuses to replace existing key files unless ``overwrite``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    secret_path, public_path = directory / "secret.ctx", directory / "public.ctx"
    for path in (secret_path, public_path):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (fedicd keys --overwrite) to replace the keys")
    secret, public = make_keys(params)
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    os.chmod(secret_path, 0o600)
    public_path.write_bytes(public)
    return secret_path, public_path


def load_context(path: str | Path) -> ts.Context:
    """Read a context written by :func:`save_keys` (either file)."""
    data = Path(path).read_bytes()
    try:
        return ts.context_from(data)
    except Exception as exc:  # TenSEAL raises ValueError/RuntimeError on bad protobufs
        raise ConfigError(f"file {path}: not a serialised TenSEAL context ({exc})") from exc


def as_context(context: ts.Context | bytes) -> ts.Context:
    """The context itself, or the context its bytes serialise."""
    if isinstance(context, ts.Context):
        return context
    if isinstance(context, (bytes, bytearray)):
        return ts.context_from(bytes(context))
    raise TypeError(f"expected a tenseal.Context or its bytes, got {type(context).__name__}")


def key_id(context: ts.Context | bytes) -> str:
    """Fingerprint of the context's key: SHA-256 of its serialised public key (first 16 bytes, hex).

    Updates made under ``context``'s key carry it (:attr:`~fedicd.secure.ckks_update.EncryptedUpdate.key_id`).
    """
    context = as_context(context)
    if context in _KEY_IDS:
        return _KEY_IDS[context]
    if not context.has_public_key():
        raise ConfigError("the context has no public key to fingerprint; make contexts with make_keys()")
    # SEAL's bindings save a public key only to a file: once per context (cached), in a private temp dir
    with tempfile.TemporaryDirectory(prefix="fedicd-ckks-") as tmp:
        path = os.path.join(tmp, "public_key.bin")
        context.public_key().data.save(path)
        _KEY_IDS[context] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]
    return _KEY_IDS[context]


_KEY_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # context → key id
