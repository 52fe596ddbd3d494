"""SEAL underneath a TenSEAL context, in memory: encode + encrypt into c0 under a seeded a, decrypt + decode.

TenSEAL's tensors never serialise the seed of a symmetric ciphertext, and SEAL's Python bindings
(``tenseal.sealapi``) only save and load through files, so this module reads and writes the
coefficients of SEAL's ciphertexts and plaintexts in place, as NumPy arrays over SEAL's own memory
(:func:`coefficients`), on the SEAL objects of the TenSEAL context itself.

Encryption (key holders only): SEAL encrypts a row with the secret key into (c0, a') = (m + e − a'·s,
a'); replacing c1 by a' − a, for the a expanded from the update's seed
(:func:`~fedicd.secure.ckks_poly.expand_seed`), and "decrypting" gives c0 + (a' − a)·s = m + e − a·s:
the c0 of the seeded ciphertext (m + e − a·s, a), with SEAL's own error e. Decryption of a sum: the
ciphertext (Σ c0_k, Σ a_k) is decrypted and decoded by SEAL. Nothing is written to disk.

Memory access: ``dyn_array()`` hands out SEAL's coefficient array by reference; its address is read
from the pybind11 wrapper and SEAL's ``DynArray`` (pool handle, capacity, size, data pointer).
Every read checks the size and capacity fields and the first and last coefficients against SEAL's
own accessors, so another TenSEAL build with another layout raises :class:`SealLayoutError` instead
of touching the wrong memory. A view is used only while its SEAL object is alive and not resized.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import tenseal as ts
import tenseal.sealapi as sa

from fedicd.errors import ConfigError
from fedicd.secure.ckks_errors import SealLayoutError, SecretKeyError
from fedicd.secure.ckks_params import CkksParams
from fedicd.secure.ckks_poly import expand_seed

__all__ = ["Seal", "check_context", "coefficients", "data_moduli"]

_PYBIND_VALUE_OFFSET = 16  # pybind11 instance: PyObject header (refcount, type), then the C++ object's address
_DYNARRAY_CAPACITY, _DYNARRAY_SIZE, _DYNARRAY_DATA = 16, 24, 32  # seal::DynArray: pool handle (16 B), capacity, size, data


def _word(address: int) -> int:
    return ctypes.c_uint64.from_address(address).value


def coefficients(obj: sa.Ciphertext | sa.Plaintext) -> np.ndarray:
    """SEAL's coefficient array of ``obj`` as a writable uint64 NumPy view (valid while ``obj`` lives unresized)."""
    dyn = obj.dyn_array()
    size, capacity = dyn.size(), dyn.capacity()
    if size == 0:
        raise SealLayoutError("the SEAL object holds no coefficients")
    array = _word(id(dyn) + _PYBIND_VALUE_OFFSET)
    if (_word(array + _DYNARRAY_SIZE), _word(array + _DYNARRAY_CAPACITY)) != (size, capacity):
        raise SealLayoutError("SEAL's DynArray is laid out differently in this TenSEAL build (size/capacity fields); "
                              "fedicd reads it for tenseal 0.3.x (SEAL 4.x): install such a tenseal")
    view = np.ctypeslib.as_array((ctypes.c_uint64 * size).from_address(_word(array + _DYNARRAY_DATA)))
    if (int(view[0]), int(view[-1])) != (dyn[0], dyn[size - 1]):
        raise SealLayoutError("SEAL's coefficient pointer reads other values than SEAL's accessors in this TenSEAL "
                              "build; fedicd reads it for tenseal 0.3.x (SEAL 4.x): install such a tenseal")
    return view


def data_moduli(context: ts.Context) -> tuple[int, ...]:
    """The data primes q_i (the coefficient moduli of a fresh ciphertext)."""
    return tuple(int(m.value()) for m in context.seal_context().data.first_context_data().parms().coeff_modulus())


class Seal:
    """SEAL objects for one TenSEAL context: the encoder and, with the secret key, encryptor and decryptor."""

    def __init__(self, context: ts.Context, params: CkksParams):
        check_context(context, params)
        self.params = params
        self.n = params.poly_modulus_degree
        self.context = context.seal_context().data
        self.parms_id = self.context.first_parms_id()
        self.moduli = data_moduli(context)
        self._q = np.repeat(np.asarray(self.moduli, dtype=np.uint64), self.n)
        self.encoder = sa.CKKSEncoder(self.context)
        if not context.is_private():
            raise SecretKeyError("SEAL encryption and decryption here need the secret context")
        secret = context.secret_key().data
        self._encryptor = sa.Encryptor(self.context, secret)
        self._decryptor = sa.Decryptor(self.context, secret)
        self._template = self._encrypt_plain(np.zeros(self.n))  # a ciphertext whose coefficients decryption overwrites
        self._lock = threading.Lock()  # one caller at a time (SEAL holds the GIL anyway): the template is shared

    def _encode(self, reals: np.ndarray) -> sa.Plaintext:
        plain = sa.Plaintext()
        self.encoder.encode((reals[0::2] + 1j * reals[1::2]).tolist(), self.parms_id, self.params.scale, plain)
        return plain

    def _encrypt_plain(self, reals: np.ndarray) -> sa.Ciphertext:
        ct = sa.Ciphertext()
        self._encryptor.encrypt_symmetric(self._encode(reals), ct)
        return ct

    def encrypt_rows(self, reals: np.ndarray, seed: bytes, first: int) -> np.ndarray:
        """c0 of the seeded ciphertexts of rows of N reals (ciphertexts first, first+1, ... of the update)."""
        width = len(self.moduli) * self.n
        a = expand_seed(seed, first, reals.shape[0], self.moduli, self.n)
        out = np.empty((reals.shape[0], width), dtype=np.uint64)
        with self._lock:
            self._rekey_rows(reals, a, out)
        return out

    def _rekey_rows(self, reals: np.ndarray, a: np.ndarray, out: np.ndarray) -> None:
        width = out.shape[1]
        plain = sa.Plaintext()
        for r, row in enumerate(reals):
            ct = self._encrypt_plain(row)
            c1 = coefficients(ct)[width:]
            np.add(c1, self._q - a[r], out=c1)  # a' + (q − a) < 2q, then mod q: a' − a
            np.remainder(c1, self._q, out=c1)
            self._decryptor.decrypt(ct, plain)  # c0 + (a' − a)·s = m + e − a·s
            out[r] = coefficients(plain)
            del c1

    def decrypt_rows(self, c0: np.ndarray, a_sum: np.ndarray) -> np.ndarray:
        """Decrypt (c0, Σ a) row by row and decode: rows × N reals (unrounded)."""
        width = len(self.moduli) * self.n
        reals = np.empty((c0.shape[0], self.n))
        plain = sa.Plaintext()
        with self._lock:
            for r in range(c0.shape[0]):
                view = coefficients(self._template)
                view[:width], view[width:] = c0[r], a_sum[r]
                del view
                self._decryptor.decrypt(self._template, plain)
                slots = np.asarray(self.encoder.decode_complex(plain), dtype=np.complex128)
                reals[r, 0::2], reals[r, 1::2] = slots.real, slots.imag
        return reals


def check_context(context: ts.Context, params: CkksParams) -> None:
    """Refuse (:class:`~fedicd.errors.ConfigError`) a context whose N or primes differ from ``params``."""
    parms = context.seal_context().data.key_context_data().parms()
    n = parms.poly_modulus_degree()
    bits = tuple(m.bit_count() for m in parms.coeff_modulus())
    if (n, bits) != (params.poly_modulus_degree, params.coeff_mod_bit_sizes):
        raise ConfigError(f"the context has N={n} and primes of {list(bits)} bits but the CkksParams say "
                          f"N={params.poly_modulus_degree} and {list(params.coeff_mod_bit_sizes)}")
