"""Addition-only CKKS secure aggregation of federated updates: encrypt, validate, add, decrypt (TenSEAL / SEAL).

Protocol
--------
All clients share the secret context (``secret.ctx``); the server holds only the public one
(``public.ctx``: the parameters and the public key, no secret key). In a round, client k with
update x_k (a dict of float arrays, e.g. a state_dict) and n_k training examples calls
:func:`encrypt_update`; the server adds the ciphertexts with :func:`aggregate_encrypted`
without being able to decrypt them (it sees neither x_k nor n_k); every client decrypts the sum
with :func:`decrypt_average`, which returns Σ n_k·x_k / Σ n_k and Σ n_k.

Encoding (why the ciphertexts are small)
----------------------------------------
* **Fixed point, weighted on the client.** u_k = round(n_k · x_k · 2^f) is an integer with
  |u_k| ≤ U = max_count · clip_range · 2^f. The server adds S = Σ_k u_k; clients return
  S · 2^-f / Σ_k n_k. The count n_k rides in the first slot component of the same ciphertexts.
* **Limbs.** Each u_k is written as ``limbs`` balanced base-2^B digits (B = :attr:`CkksParams.limb_bits`),
  one per *real* slot component; a CKKS slot is complex, so one ciphertext carries
  N = poly_modulus_degree reals (TenSEAL's vectors use only the real half). Digits are small
  integers encoded at scale Δ = 2^global_scale, so after decryption they are rounded back to
  integers; the digit sums are then *exact* as long as the accumulated CKKS error stays below
  Δ/2, which :class:`CkksParams` checks against a worst-case bound (:meth:`CkksParams.noise_bound`).
  Decryption also checks that every decoded value lies within that bound of an integer, which
  catches ciphertexts made under another secret key.
* **Seeded symmetric encryption, c1 never sent.** Clients hold the secret key, so they encrypt with
  it: c0 = m + e − a·s, c1 = a uniformly random, expanded from a 32-byte seed per update (one a per
  ciphertext, :mod:`~fedicd.secure.ckks_poly`). Only c0 and the seed travel. The server adds the c0
  residues mod q (NumPy, :mod:`~fedicd.secure.ckks_sum`) and forwards the clients' seeds; a key
  holder re-expands Σ_k a_k from them and decrypts (Σ c0 + Σ a_k·s = Σ (m_k + e_k)). So the
  aggregate is as small as one upload plus 32 bytes per client. TenSEAL's tensors never serialise
  a seed, so this module drives SEAL through ``tenseal.sealapi`` on the SEAL objects of the TenSEAL
  context itself, reading and writing their coefficients in memory (:mod:`~fedicd.secure.ckks_seal`).
* **One small data prime, no key-switching keys.** TenSEAL refuses a single-prime modulus (it
  always builds relinearisation keys), so the modulus is (data prime, special prime); ciphertexts
  live at the data level and only carry the 48-bit data prime: 6 bytes per coefficient on the wire.
* **Parallel.** ``workers`` (0 = every core): key holders encrypt and decrypt ranges of ciphertexts
  in worker processes (SEAL's bindings hold the GIL), the server adds them in threads
  (:mod:`~fedicd.secure.ckks_workers`). The result does not depend on ``workers``.

With the defaults (N = 4096, primes of 48 and 60 bits: 108 ≤ 109 bits, 128-bit secure per the
HE standard) a ciphertext is 24.6 kB for 4096 reals, i.e. 12 bytes per value with 2 limbs:
3.0x the fp32 bytes up and down, for a maximum absolute error of 2^-21 ≈ 4.8e-7
on |x| ≤ 16 with up to 32 clients and 2^20 examples each (:func:`precision_bound`; smaller when
Σ n_k ≫ K). ``limbs=1`` halves the bytes (1.73x) but then a value and its headroom must fit one
component's ~27.5 bits, so 1e-5 precision is only reachable when
max_clients · max_count · clip_range ≲ 2^10 (e.g. 16 clients, 4096 examples, |x| ≤ 4 gives 2^-10).

What did not help: a single coefficient prime (TenSEAL refuses it), TenSEAL's ``SYMMETRIC``
contexts (same ciphertext size: no seed is serialised), and packing several values into one
slot component (CKKS decoding goes through double-precision FFTs, so a component holds < 53
bits, of which ~20 go to the noise margin Δ; a weighted value needs more than half of the rest).

Replays: each update's seed is fresh (32 random bytes), so an update sent twice, in one round or
a later one, carries a seed already added; :func:`aggregate_encrypted` refuses repeated seeds
within one sum and :class:`~fedicd.secure.ckks_round.CkksServer` every seed it has added before
(:class:`ReplayError`).

Modules: :mod:`~fedicd.secure.ckks_params` (:class:`CkksParams`, :func:`precision_bound`),
:mod:`~fedicd.secure.ckks_keys` (:func:`make_keys`, :func:`save_keys`, :func:`load_context`,
:func:`key_id`), :mod:`~fedicd.secure.ckks_update` (:class:`EncryptedUpdate` and its bytes),
:mod:`~fedicd.secure.ckks_packing` (the fixed-point limbs), :mod:`~fedicd.secure.ckks_seal`
(SEAL in memory), :mod:`~fedicd.secure.ckks_poly` (c0 bytes, a from seeds), :mod:`~fedicd.secure.ckks_sum`
(the server's addition), :mod:`~fedicd.secure.ckks_workers` (parallelism) and
:mod:`~fedicd.secure.ckks_errors` (the named errors). This module holds the protocol's steps: :func:`encrypt_update`, :func:`validate_update`,
:func:`aggregate_encrypted` and :func:`decrypt_average`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

import numpy as np
import tenseal as ts

from fedicd.secure.ckks_errors import (
    CapacityError,
    CiphertextError,
    CountError,
    LayoutError,
    ReplayError,
    SecretKeyError,
)
from fedicd.secure.ckks_keys import as_context, key_id
from fedicd.secure.ckks_packing import clip_values, flatten, n_ciphertexts, pack, to_fixed_point, unpack
from fedicd.secure.ckks_params import CkksParams
from fedicd.secure.ckks_poly import SEED_BYTES
from fedicd.secure.ckks_seal import check_context, data_moduli
from fedicd.secure.ckks_sum import add_bodies, check_bodies
from fedicd.secure.ckks_update import EncryptedUpdate, Layout
from fedicd.secure.ckks_workers import resolve_workers, runner_for

__all__ = ["aggregate_encrypted", "check_header", "decrypt_average", "encrypt_update", "validate_update"]


def _encrypt_packed(context: ts.Context, reals: np.ndarray, layout: Layout, params: CkksParams,
                    n_clipped: int = 0, workers: int = 1) -> EncryptedUpdate:
    """Encrypt packed rows (see :func:`~fedicd.secure.ckks_packing.pack`) into an :class:`EncryptedUpdate`."""
    seed = secrets.token_bytes(SEED_BYTES)  # fresh per update: the a of its ciphertexts, and its replay tag
    body, digests = runner_for(context, params).encrypt(reals, seed, resolve_workers(workers))
    return EncryptedUpdate(body, digests, (seed,), layout, params, key_id(context), data_moduli(context), 1,
                           n_clipped)


def encrypt_update(context: ts.Context | bytes, arrays: Mapping[str, np.ndarray], n_examples: int,
                   params: CkksParams | None = None, *, clip: bool = False, workers: int = 1) -> EncryptedUpdate:
    """Encrypt one client's update weighted by its example count (client side, secret key).

    Parameters
    ----------
    context:
        The secret context (or its bytes).
    arrays:
        Name → floating array; NaN/Inf raise :class:`NonFiniteError`.
    n_examples:
        The client's example count, 1 ≤ n_examples ≤ ``params.max_count`` (else :class:`CountError`).
    params:
        Must match the context's N and primes.
    clip:
        Values outside ±clip_range raise :class:`ClipError` (default) or, with ``clip=True``, are
        clipped; their number is reported in :attr:`EncryptedUpdate.n_clipped` (summed by the server).
    workers:
        Processes that encrypt ranges of ciphertexts (0 = every core; 1 = this process). The
        ciphertexts do not depend on it (beyond their fresh randomness).
    """
    params = params or CkksParams()
    context = as_context(context)
    if not context.is_private():
        raise SecretKeyError("encrypt_update needs the secret context (clients encrypt with the secret key)")
    if isinstance(n_examples, bool) or not isinstance(n_examples, (int, np.integer)):
        raise CountError(f"n_examples must be an integer, got {n_examples!r}")
    if not 1 <= n_examples <= params.max_count:
        raise CountError(f"n_examples={n_examples} must be between 1 and max_count={params.max_count}")
    layout, flats = flatten(arrays)
    values, n_clipped = clip_values(layout, flats, params, clip)
    u = to_fixed_point(values, n_examples, params)
    return _encrypt_packed(context, pack(int(n_examples), u, params), layout, params, n_clipped, workers)


def _check_headers(updates: Sequence[EncryptedUpdate], key: str, moduli: tuple[int, ...]) -> None:
    """Same params and layout, right key and primes, right ciphertext and seed counts, or a named error."""
    if not updates:
        raise LayoutError("no updates given")
    first = updates[0]
    for i, up in enumerate(updates):
        if up.params != first.params:
            raise LayoutError(f"update {i} was encrypted with other CkksParams than update 0: {up.params} "
                              f"vs {first.params}")
        if up.layout != first.layout:
            diff = next(((a, b) for a, b in zip(up.layout, first.layout) if a != b),
                        (f"{len(up.layout)} arrays", f"{len(first.layout)}"))
            raise LayoutError(f"update {i} has another layout than update 0 (first difference: {diff[0]} vs "
                              f"{diff[1]})")
        if up.key_id != key:
            raise CiphertextError(f"update {i} was encrypted under another key (key id {up.key_id} ≠ {key} "
                                  "of this context)", update=i)
        if up.moduli != moduli:
            raise CiphertextError(f"update {i} was made under other data primes {list(up.moduli)} than this "
                                  f"context's {list(moduli)} (another context)", update=i)
        expected = n_ciphertexts(up.n_values, up.params)
        if up.n_ciphertexts != expected or len(up.body) != expected * up.ciphertext_bytes:
            raise CiphertextError(f"update {i} has {up.n_ciphertexts} ciphertexts ({len(up.body)} bytes); its "
                                  f"layout needs {expected}", update=i)
        if len(up.seeds) != up.n_clients or any(len(s) != SEED_BYTES for s in up.seeds):
            raise CiphertextError(f"update {i} sums {up.n_clients} client updates but carries {len(up.seeds)} "
                                  "seeds", update=i)


def _check_replays(updates: Sequence[EncryptedUpdate]) -> None:
    """Refuse a seed repeated among ``updates`` (:class:`ReplayError`)."""
    owner: dict[bytes, int] = {}
    for i, up in enumerate(updates):
        for seed in up.seeds:
            if seed in owner:
                raise ReplayError(f"update {i} carries the seed of update {owner[seed]} (a replayed or duplicated "
                                  "update)")
            owner[seed] = i


def validate_update(update: EncryptedUpdate, *, key: str, params: CkksParams, layout: Layout,
                    moduli: tuple[int, ...] | None = None, workers: int = 1) -> None:
    """Server-side checks of one update before it is added (no decryption): the expected key,
    parameters, data primes (``moduli``, when given) and array layout, the right number of
    ciphertexts and seeds, intact bytes, residues below their primes; a named error
    (:class:`CiphertextError` or :class:`LayoutError`) otherwise."""
    check_header(update, key=key, params=params, layout=layout, moduli=moduli)
    check_bodies([(update.body, update.digests)], update.n_ciphertexts, update.moduli,
                 params.poly_modulus_degree, resolve_workers(workers))


def check_header(update: EncryptedUpdate, *, key: str, params: CkksParams, layout: Layout,
                  moduli: tuple[int, ...] | None) -> None:
    """:func:`validate_update` without reading the ciphertexts (what the server checks before adding)."""
    if update.params != params:
        raise LayoutError(f"the update was encrypted with other CkksParams: {update.params} vs {params}")
    if update.layout != tuple(layout):
        raise LayoutError(f"the update's arrays {[(n, s) for n, s in update.layout][:4]}... do not match the "
                          f"model's {[(n, s) for n, s in layout][:4]}...")
    if update.n_clients != 1:
        raise CiphertextError(f"a client update claims to sum {update.n_clients} client updates")
    _check_headers([update], key, update.moduli if moduli is None else tuple(moduli))


def aggregate_encrypted(context: ts.Context | bytes, updates: Sequence[EncryptedUpdate], *,
                        workers: int = 1) -> EncryptedUpdate:
    """Add encrypted updates (server side; the public context suffices and nothing is decrypted).

    The sum's c0 is the residue-wise sum of the updates' c0 and its seeds are theirs, in order.
    Raises :class:`LayoutError` when updates differ in layout or params, :class:`CiphertextError`
    (naming the update and ciphertext; ``.update`` is its index) for another key or context, wrong
    ciphertext or seed count, corrupted bytes or residues not below their prime,
    :class:`ReplayError` for a seed repeated among the updates, and :class:`CapacityError` when the
    sum would cover more than ``max_clients`` client updates. ``workers``: threads (0 = every core).
    """
    context = as_context(context)
    moduli = data_moduli(context)
    _check_headers(updates, key_id(context), moduli)
    _check_replays(updates)
    params = updates[0].params
    check_context(context, params)
    n_clients = sum(up.n_clients for up in updates)
    if n_clients > params.max_clients:
        raise CapacityError(f"the sum would cover {n_clients} client updates; CkksParams.max_clients="
                            f"{params.max_clients} bounds the noise and the integer headroom")
    body, digests = add_bodies([(up.body, up.digests) for up in updates], updates[0].n_ciphertexts, moduli,
                               params.poly_modulus_degree, resolve_workers(workers))
    return EncryptedUpdate(body, digests, tuple(s for up in updates for s in up.seeds), updates[0].layout, params,
                           updates[0].key_id, moduli, n_clients, sum(up.n_clipped for up in updates))


def decrypt_average(context: ts.Context | bytes, aggregate: EncryptedUpdate,
                    params: CkksParams | None = None, *, workers: int = 1) -> tuple[dict[str, np.ndarray], int]:
    """Decrypt an aggregate into the weighted average Σ n_k x_k / Σ n_k (float64 arrays) and Σ n_k.

    Every decoded slot component must lie within ``noise_bound(n_clients)/Δ`` of an integer
    (else :class:`CiphertextError`: wrong secret key, a seed or c0 changed, corrupted or forged
    ciphertext); a total count of zero raises :class:`CountError`. See :func:`precision_bound` for
    the accuracy. ``workers``: processes that decrypt ranges of ciphertexts (0 = every core).
    """
    params = params or CkksParams()
    context = as_context(context)
    if not context.is_private():
        raise SecretKeyError("decrypt_average needs the secret context; this one has no secret key")
    if aggregate.params != params:
        raise LayoutError(f"the aggregate was made with other CkksParams: {aggregate.params} vs {params}")
    _check_headers([aggregate], key_id(context), data_moduli(context))
    runner = runner_for(context, params)
    workers = resolve_workers(workers)
    check_bodies([(aggregate.body, aggregate.digests)], aggregate.n_ciphertexts, aggregate.moduli,
                 params.poly_modulus_degree, workers)
    ints, deviation = runner.decrypt(aggregate.body, aggregate.n_ciphertexts, aggregate.seeds, workers)
    tolerance = params.noise_bound(aggregate.n_clients) / params.scale
    if deviation > tolerance:
        raise CiphertextError(f"decrypted values lie up to {deviation:.3g} from integers (bound {tolerance:.3g}): "
                              "wrong secret key, a changed seed, corrupted/forged ciphertext, or too many clients")
    return unpack(ints.ravel(), aggregate.layout, aggregate.n_clients, params)
