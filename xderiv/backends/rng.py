r"""A counter-based random generator written with Array API integer operations only.

The Array API has no random numbers and the core imports no array library, so
the randomized operators (:mod:`xderiv.operators.estimators`) draw their directions
from this generator: every number is a hash of ``(key, counter)``, computed
where the array lives (any backend, any device), with no host round trip and
no state, so that the same seed gives the same numbers on every backend and a
traced call (``torch.compile``, ``jax.jit``) traces it like any other
arithmetic.

Words
    A 32-bit word is held in an ``int64`` array (values in ``[0, 2^{32})``).
    Every operation stays exact in ``int64``: xor, logical shifts of
    non-negative values, and products of a word with a constant of magnitude
    below :math:`2^{31}` (a constant :math:`c \ge 2^{31}` is applied as
    :math:`c - 2^{32}`, the same residue), masked back to 32 bits.  Nothing
    overflows, so NumPy, torch (which has no ``uint32`` shifts or adds),
    JAX (with ``jax_enable_x64``), CuPy, array-api-strict and dask compute the
    same bits.  Python ints follow the same formulas, so a key derived on the
    host equals one derived from a 0-d integer array on the device.

Hash
    :func:`mix32` is Wellons' ``lowbias32`` (two multiply-xorshift rounds, a
    bijection of 32-bit words).  A counter :math:`c` (``int64``) is hashed
    under the key :math:`(k_0, k_1)` as

    .. math:: h(c) = \mathrm{mix}\big(\mathrm{mix}(c_{lo} \oplus k_0) \oplus c_{hi} \oplus k_1\big),

    with :math:`c_{lo}, c_{hi}` its low and high 32 bits (the high word is
    skipped when the shape says every counter is below :math:`2^{32}`): for a
    fixed key a bijection of :math:`c_{lo}`, and two keyed rounds, so that
    different seeds give unrelated streams rather than shifted copies of one.
    The key words themselves are hashed from the 64-bit seed.

Numbers
    - Rademacher signs: bit :math:`e \bmod 32` of :math:`h(\lfloor e/32 \rfloor)`
      for element :math:`e`; exactly :math:`\pm 1` with probability 1/2 each.
    - Uniforms in (0, 1): :math:`(j + \tfrac12) 2^{-b}` from the top ``b`` bits,
      ``b = 53`` (two words) in float64, ``b = 24`` in float32 and below.
    - Normals: Box–Muller on uniform pairs, :math:`r = \sqrt{-2\ln u_1}`,
      :math:`(r\cos 2\pi u_2, r\sin 2\pi u_2)`.  The angles are equally spaced,
      so every trigonometric moment below the resolution is exact; the radius
      discretisation makes :math:`E[z^2] = 1 - O(2^{-b})`.
    - Coordinates without replacement: the first ``k`` of an argsort of 63-bit
      keys (two words), a uniformly random ``k``-subset in random order up to
      key ties (probability about :math:`d^2 2^{-64}`).

Identity across backends: the integer streams (signs, coordinates) are
bit-identical on every backend; the normals go through ``log``, ``sqrt``,
``cos``, ``sin``, which libraries round differently in the last place, so
they agree to a few ulp.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

from .namespace import Array, array_namespace_of, is_array, library

MASK = 0xFFFFFFFF
"""The low 32 bits."""

_GOLDEN = 0x9E3779B9
_KEY_SALT = 0x85EBCA6B


def _mul(x: Any, c: int) -> Any:
    """``x * c mod 2^32`` for a word ``x`` (int64 array or Python int) and a 32-bit constant ``c``; never overflows."""
    return (x * (c - (1 << 32) if c >= 1 << 31 else c)) & MASK


def mix32(x: Any) -> Any:
    """Wellons' ``lowbias32``: a bijective 32-bit integer hash of words in ``[0, 2^32)``."""
    x = x ^ (x >> 16)
    x = _mul(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul(x, 0x846CA68B)
    return x ^ (x >> 16)


@dataclass(frozen=True)
class Key:
    """Two 32-bit key words: Python ints (seeded on the host) or 0-d ``int64`` arrays (seeded on the device)."""

    k0: Any
    k1: Any


def _key_from_words(lo: Any, hi: Any) -> Key:
    k0 = mix32(mix32(lo ^ _GOLDEN) ^ hi)
    k1 = mix32(mix32(hi ^ _KEY_SALT) ^ k0)
    return Key(k0, k1)


def _draw(generator: Any) -> int:
    """64 random bits from a host generator (``numpy.random.Generator``, ``random.Random``), advancing it."""
    if hasattr(generator, "integers"):
        return int(generator.integers(0, 1 << 63)) * 2 + int(generator.integers(0, 2))
    return int(generator.getrandbits(64))


def key_of(seed: Any, xp: Any) -> Key:
    """The key of ``seed``.

    Parameters
    ----------
    seed : int, 0-d integer array of namespace ``xp``, or a generator
        An int (any size; taken modulo :math:`2^{64}`) or an integer 0-d array
        (e.g. a traced step counter under ``jax.jit``) give the same key for
        the same value.  A ``numpy.random.Generator`` or ``random.Random`` is
        drawn from (64 bits; it advances, so each call gets new numbers).

    Raises
    ------
    TypeError
        Anything else, naming what was seen.
    """
    if isinstance(seed, bool) or seed is None:
        raise TypeError(
            f"seed must be an int, a 0-d integer array or a random generator (numpy.random.Generator, "
            f"random.Random), got {seed!r}"
        )
    if isinstance(seed, int):
        s = seed % (1 << 64)
        return _key_from_words(s & MASK, s >> 32)
    if hasattr(seed, "integers") or hasattr(seed, "getrandbits"):
        return key_of(_draw(seed), xp)
    if is_array(seed):
        seed_xp = array_namespace_of(seed)
        if seed_xp is not xp:
            raise TypeError(
                f"seed is an array of {library(seed_xp)} but the call computes with {library(xp)}; "
                "pass a Python int (int(seed)) or an integer array of the call's library"
            )
        if seed.ndim != 0 or not xp.isdtype(seed.dtype, "integral"):
            raise TypeError(
                f"an array seed must be a 0-d integer array, got shape {tuple(seed.shape)} and dtype {seed.dtype}"
            )
        s = xp.astype(seed, xp.int64)
        return _key_from_words(s & MASK, (s >> 32) & MASK)
    try:
        return key_of(operator.index(seed), xp)  # NumPy integer scalars and other int-likes
    except TypeError:
        pass
    raise TypeError(
        f"seed must be an int, a 0-d integer array or a random generator (numpy.random.Generator, "
        f"random.Random), got {type(seed).__name__}"
    )


def int64(xp: Any) -> Any:
    """``xp.int64``, refusing a namespace that silently gives narrower integers (JAX without ``jax_enable_x64``)."""
    dtype = xp.int64
    probe = xp.asarray(0, dtype=dtype)
    if probe.dtype != dtype:  # JAX with jax_enable_x64 off
        raise TypeError(
            f"xderiv's random directions need 64-bit integers, which {library(xp)} does not provide now "
            f"(it gives {probe.dtype}); with JAX enable them: jax.config.update('jax_enable_x64', True)"
        )
    return dtype


def hash32(key: Key, counters: Array, wide: bool = True) -> Array:
    """The word :math:`h(c)` for every counter (``int64`` array of non-negative values).

    ``wide=False`` promises counters below :math:`2^{32}` (known from the
    shape, not the values) and skips their high word, which is then zero.
    """
    lo = counters & MASK if wide else counters
    h = mix32(lo ^ key.k0)
    return mix32(h ^ (counters >> 32) ^ key.k1 if wide else h ^ key.k1)


@dataclass(frozen=True)
class Stream:
    """The numbers of one key, drawn in namespace ``xp`` on ``device``.

    Each method starts from counter 0: two draws of one stream repeat each
    other (different draws take different seeds).
    """

    key: Key
    xp: Any
    device: Any
    i64: Any

    @classmethod
    def of(cls, seed: Any, xp: Any, device: Any) -> Stream:
        """The stream of ``seed`` (see :func:`key_of`)."""
        return cls(key_of(seed, xp), xp, device, int64(xp))

    def counters(self, count: int, stride: int = 1) -> Array:
        c = self.xp.arange(count, dtype=self.i64, device=self.device)
        return c * stride if stride != 1 else c

    def words(self, counters: Array, top: int) -> Array:
        """32-bit words :math:`h(c)` of ``counters``, all below ``top``."""
        return hash32(self.key, counters, wide=top > MASK)

    def rademacher(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """Signs :math:`\\pm 1` of ``shape``; element ``e`` (row-major) is bit ``e % 32`` of word ``e // 32``."""
        xp, n = self.xp, math.prod(shape)
        count = (n + 31) // 32
        words = self.words(self.counters(count), count)
        # the four bytes of each word, then their bits, in uint8 (a quarter of the traffic of int64)
        shifts = xp.arange(0, 32, 8, dtype=self.i64, device=self.device)
        octets = xp.astype(xp.reshape((words[:, None] >> shifts[None, :]) & 255, (-1,)), xp.uint8)
        bit = xp.arange(8, dtype=xp.uint8, device=self.device)
        bits = xp.astype(xp.reshape((octets[:, None] >> bit[None, :]) & 1, (-1,))[:n], xp.int8)
        return xp.reshape(xp.astype(1 - 2 * bits, dtype), shape)  # the sign in int8, then one cast

    def _uniform_pairs(self, pairs: int, work: Any, bits: int) -> tuple[Array, Array]:
        """Two uniforms in (0, 1) per pair ``p``: counters ``3p``, ``3p + 1`` (radius) and ``3p + 2`` (angle)."""
        xp = self.xp
        c, top = self.counters(pairs, stride=3), 3 * pairs
        a, angle = self.words(c, top), self.words(c + 2, top)
        if bits == 53:
            j = (a << 21) | (self.words(c + 1, top) >> 11)  # 53 bits, exact in float64
            u1 = (xp.astype(j, work) + 0.5) * 2.0**-53
            u2 = (xp.astype(angle, work) + 0.5) * 2.0**-32
        else:
            u1 = (xp.astype(a >> 8, work) + 0.5) * 2.0**-24
            u2 = (xp.astype(angle >> 8, work) + 0.5) * 2.0**-24
        return u1, u2

    def _work(self, dtype: Any) -> tuple[Any, int]:
        """Where uniforms are formed: float64 with 53 bits, or float32 with 24 bits for narrower dtypes."""
        if self.xp.finfo(dtype).bits >= 64:
            return dtype, 53
        return self.xp.float32, 24

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """Uniforms in (0, 1) of ``shape`` (the radius uniforms of :meth:`normal`'s pairs, one per element)."""
        work, bits = self._work(dtype)
        u1, _ = self._uniform_pairs(math.prod(shape), work, bits)
        return self.xp.reshape(self.xp.astype(u1, dtype), shape)

    def normal(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """Standard normals of ``shape`` by Box–Muller; elements ``2p`` and ``2p + 1`` come from pair ``p``."""
        xp, n = self.xp, math.prod(shape)
        work, bits = self._work(dtype)
        u1, u2 = self._uniform_pairs((n + 1) // 2, work, bits)
        r = xp.sqrt(-2.0 * xp.log(u1))
        t = (2.0 * math.pi) * u2
        z = xp.reshape(xp.stack([r * xp.cos(t), r * xp.sin(t)], axis=-1), (-1,))[:n]
        return xp.reshape(z if work == dtype else xp.astype(z, dtype), shape)

    def choose(self, rows: int, d: int, k: int) -> Array:
        """``k`` distinct indices out of ``range(d)`` per row, shape ``(rows, k)`` (``int64``).

        Uniformly random ``k``-subsets in random order: the first ``k`` of an
        argsort of 63-bit random keys (stable, so the result is the same everywhere).
        """
        xp = self.xp
        c, top = self.counters(rows * d, stride=2), 2 * rows * d
        keys = (self.words(c, top) << 31) | (self.words(c + 1, top) >> 1)
        order = xp.argsort(xp.reshape(keys, (rows, d)), axis=-1, stable=True)
        return order[:, :k]
