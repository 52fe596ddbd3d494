"""SEAL underneath a TenSEAL context: seeded encryption, decryption and ciphertext ↔ bytes.

TenSEAL's tensors never serialise the seed of a symmetric ciphertext, so the CKKS update code
drives SEAL through ``tenseal.sealapi`` on the SEAL objects of the TenSEAL context itself (see
:mod:`fedicd.secure.ckks`). SEAL's Python bindings only load and save files: each session keeps
those round trips in a private temporary directory, in memory (``/dev/shm``) where Linux offers it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tenseal as ts
import tenseal.sealapi as sa

from fedicd.errors import ConfigError
from fedicd.secure.ckks_errors import CiphertextError
from fedicd.secure.ckks_params import CkksParams

__all__ = ["Seal", "check_context", "open_seal"]

# SEAL's Python bindings only load/save files: keep those round trips in memory where Linux offers it
_MEMORY_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class Seal:
    """SEAL objects for one TenSEAL context, and ciphertext ↔ bytes through a private temp dir.

    ``tenseal.sealapi`` is given the TenSEAL context's own SEALContext and secret key (pybind11
    passes them between TenSEAL's two extension modules); its objects only save/load files.
    """

    def __init__(self, context: ts.Context, params: CkksParams, tmpdir: str):
        self.params = params
        self.context = context.seal_context().data
        self.parms_id = self.context.first_parms_id()
        self.encoder = sa.CKKSEncoder(self.context)
        self.evaluator = sa.Evaluator(self.context)
        secret = context.secret_key().data if context.is_private() else None
        self._encryptor = sa.Encryptor(self.context, secret) if secret is not None else None
        self._decryptor = sa.Decryptor(self.context, secret) if secret is not None else None
        self._path = os.path.join(tmpdir, "ciphertext.bin")

    def encrypt(self, reals: np.ndarray) -> bytes:
        """Encrypt N reals (pairs → complex slots) with the secret key; seeded serialisation."""
        plain = sa.Plaintext()
        self.encoder.encode((reals[0::2] + 1j * reals[1::2]).tolist(), self.parms_id, self.params.scale, plain)
        self._encryptor.encrypt_symmetric(plain).save(self._path)
        return Path(self._path).read_bytes()

    def load(self, data: bytes, where: str) -> sa.Ciphertext:
        """Deserialise and check one ciphertext; failures raise :class:`CiphertextError` naming ``where``."""
        Path(self._path).write_bytes(data)
        ct = sa.Ciphertext()
        try:
            ct.load(self.context, self._path)
        except Exception as exc:  # SEAL: RuntimeError/ValueError ("ciphertext data is invalid", "I/O error")
            raise CiphertextError(f"{where}: SEAL cannot load it ({exc}); corrupted, or made under other "
                                  "parameters") from exc
        if ct.size() != 2 or not ct.is_ntt_form() or ct.parms_id() != self.parms_id:
            raise CiphertextError(f"{where}: not a fresh 2-component ciphertext at the data level of this context")
        if ct.scale != self.params.scale:
            raise CiphertextError(f"{where}: scale {ct.scale:g} ≠ Δ = {self.params.scale:g}")
        return ct

    def save(self, ct: sa.Ciphertext) -> bytes:
        ct.save(self._path)
        return Path(self._path).read_bytes()

    def decrypt(self, ct: sa.Ciphertext) -> np.ndarray:
        """Decrypt and decode one ciphertext into its N reals (unrounded)."""
        plain = sa.Plaintext()
        self._decryptor.decrypt(ct, plain)
        slots = np.asarray(self.encoder.decode_complex(plain), dtype=np.complex128)
        reals = np.empty(2 * slots.size)
        reals[0::2], reals[1::2] = slots.real, slots.imag
        return reals


@contextlib.contextmanager
def open_seal(context: ts.Context, params: CkksParams) -> Iterator[Seal]:
    """A :class:`Seal` for ``context`` (checked against ``params``) with its own temporary directory."""
    check_context(context, params)
    with tempfile.TemporaryDirectory(prefix="fedicd-ckks-", dir=_MEMORY_TMP) as tmp:
        yield Seal(context, params, tmp)


def check_context(context: ts.Context, params: CkksParams) -> None:
    """Refuse (:class:`~fedicd.errors.ConfigError`) a context whose N or primes differ from ``params``."""
    parms = context.seal_context().data.key_context_data().parms()
    n = parms.poly_modulus_degree()
    bits = tuple(m.bit_count() for m in parms.coeff_modulus())
    if (n, bits) != (params.poly_modulus_degree, params.coeff_mod_bit_sizes):
        raise ConfigError(f"the context has N={n} and primes of {list(bits)} bits but the CkksParams say "
                          f"N={params.poly_modulus_degree} and {list(params.coeff_mod_bit_sizes)}")
