"""HMAC-SM3 of many values at once: SM3 (GB/T 32905-2016) vectorized with numpy.

Pseudonymizing a column costs one HMAC per distinct value. Called value by value from Python
(OpenSSL's SM3, ``transforms.operators.hmac_sm3_tokens``) it runs at about 1 M values/s
per core and holds the GIL, so polars' streaming threads wait on each other. Here the values
of one byte length are hashed together: each of SM3's 32-bit words is a numpy array with one
lane per value, so one compression round is a few dozen array operations over all values,
and numpy releases the GIL inside each, letting two batches hash on two cores.

The result is HMAC-SM3 exactly (RFC 2104 over SM3; tested against ``hmac.new(key, m,
"sm3")`` on values of every length class, ASCII and not): the key's inner and outer pad
blocks are compressed once, then per value the message blocks under the inner state and the
single block holding the inner digest under the outer state.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import polars as pl

# GB/T 32905 initial value
_IV = np.array(
    [
        0x7380166F,
        0x4914B2B9,
        0x172442D7,
        0xDA8A0600,
        0xA96F30BC,
        0x163138AA,
        0xE38DEE4D,
        0xB0FB0E4E,
    ],
    dtype=np.uint32,
)
_BLOCK = 64
# Lanes per call of the round function: numpy's per-call overhead (~1 us, ~2 400 calls per
# compression) is paid per chunk, cache misses grow with it; measured best of 8 192-65 536.
LANES = 32_768
# byte -> its two lowercase hex characters, as one uint16 (one gather per digest byte)
_HEX2 = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint16)


def _rotl_int(x: int, n: int) -> int:
    n %= 32
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF if n else x


# T_j rotated left by j mod 32, as the round adds it.
_T = [np.uint32(_rotl_int(0x79CC4519 if j < 16 else 0x7A879D8A, j)) for j in range(64)]
_S = {n: (np.uint32(n), np.uint32(32 - n)) for n in (7, 9, 12, 15, 17, 19, 23)}


def _rotl(x: np.ndarray, n: int, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """``out`` = x rotated left by n (``out`` may be ``x``; ``tmp`` is scratch)."""
    left, right = _S[n]
    np.left_shift(x, left, out=tmp)
    np.right_shift(x, right, out=out)
    out |= tmp
    return out


def _compress(state: np.ndarray, words: np.ndarray) -> np.ndarray:
    """SM3's compression function on ``n`` lanes: ``state`` (8, n) chaining values, ``words``
    (16, n) message words (big-endian). Returns the new (8, n) state."""
    n = words.shape[1]
    w = np.empty((68, n), dtype=np.uint32)
    w[:16] = words
    t1, t2 = np.empty(n, np.uint32), np.empty(n, np.uint32)
    for j in range(16, 68):
        x = w[j]
        _rotl(w[j - 3], 15, x, t1)
        x ^= w[j - 16]
        x ^= w[j - 9]
        # P1(x) = x ^ (x <<< 15) ^ (x <<< 23)
        _rotl(x, 15, t2, t1)
        t2 ^= x
        _rotl(x, 23, x, t1)
        x ^= t2
        _rotl(w[j - 13], 7, t2, t1)
        x ^= t2
        x ^= w[j - 6]
    a, b, c, d, e, f, g, h = (state[i].copy() for i in range(8))
    a12, ss1, tt, u = (np.empty(n, np.uint32) for _ in range(4))
    for j in range(64):
        _rotl(a, 12, a12, t1)
        np.add(a12, e, out=ss1)
        ss1 += _T[j]
        _rotl(ss1, 7, ss1, t1)
        a12 ^= ss1  # SS2
        # TT1 = FF(a, b, c) + d + SS2 + (W_j ^ W_{j+4}), built in d (d is not needed after)
        if j < 16:
            np.bitwise_xor(a, b, out=u)
            u ^= c
        else:
            np.bitwise_or(a, b, out=u)
            u &= c
            np.bitwise_and(a, b, out=t1)
            u |= t1
        d += u
        d += a12
        np.bitwise_xor(w[j], w[j + 4], out=t1)
        d += t1
        # TT2 = GG(e, f, g) + h + SS1 + W_j, built in h
        if j < 16:
            np.bitwise_xor(e, f, out=u)
            u ^= g
        else:
            np.bitwise_xor(f, g, out=u)
            u &= e
            u ^= g
        h += u
        h += ss1
        h += w[j]
        # E' = P0(TT2) = TT2 ^ (TT2 <<< 9) ^ (TT2 <<< 17), into tt
        _rotl(h, 9, tt, t1)
        tt ^= h
        _rotl(h, 17, u, t1)
        tt ^= u
        _rotl(b, 9, b, t1)
        _rotl(f, 19, f, t1)
        # rename: A'=TT1, B'=A, C'=B<<<9, D'=C, E'=P0, F'=E, G'=F<<<19, H'=G; the freed
        # arrays (old H, old E's slot) become the next round's scratch.
        a, b, c, d, e, f, g, h, tt = d, a, b, c, tt, e, f, g, h
    out = np.stack([a, b, c, d, e, f, g, h])
    out ^= state
    return out


@lru_cache(maxsize=4)
def _pad_states(key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The (8,) SM3 states after the key's inner and outer pad blocks (RFC 2104).

    Cached per key (two one-lane compressions cost a few milliseconds of numpy calls, per
    batch otherwise); the process holds the key itself for the whole query anyway."""
    import hashlib

    if len(key) > _BLOCK:
        key = hashlib.new("sm3", key).digest()
    key = key.ljust(_BLOCK, b"\0")

    def absorbed(pad: int) -> np.ndarray:
        block = np.frombuffer(bytes(b ^ pad for b in key), dtype=">u4").astype(np.uint32)
        return _compress(_IV[:, None], block[:, None])[:, 0]

    inner, outer = absorbed(0x36), absorbed(0x5C)
    inner.setflags(write=False)
    outer.setflags(write=False)
    return inner, outer


def _hmac_same_length(msgs: np.ndarray, inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """(n, 32) HMAC-SM3 digests of the rows of ``msgs`` ((n, L) bytes, one length L)."""
    n, length = msgs.shape
    # Inner hash: the pad block is already absorbed; the message, 0x80, zeros and the bit
    # length of pad block + message fill whole blocks.
    blocks = (length + 1 + 8 + _BLOCK - 1) // _BLOCK
    padded = np.zeros((n, blocks * _BLOCK), dtype=np.uint8)
    padded[:, :length] = msgs
    padded[:, length] = 0x80
    bits = (_BLOCK + length) * 8
    padded[:, -8:] = np.frombuffer(bits.to_bytes(8, "big"), dtype=np.uint8)
    words = np.ascontiguousarray(padded.view(">u4").astype(np.uint32).T)  # (16 * blocks, n)
    state = np.repeat(inner[:, None], n, axis=1)
    for k in range(blocks):
        state = _compress(state, words[16 * k : 16 * (k + 1)])
    # Outer hash: one block holding the 32-byte inner digest, 0x80 and the bit length.
    last = np.zeros((16, n), dtype=np.uint32)
    last[:8] = state
    last[8] = 0x80000000
    last[15] = (_BLOCK + 32) * 8
    digest = _compress(np.repeat(outer[:, None], n, axis=1), last)
    return np.ascontiguousarray(digest.T).astype(">u4").view(np.uint8).reshape(n, 32)


def _hex(digests: np.ndarray) -> np.ndarray:
    """(n, 32) bytes -> (n, 64) lowercase hex characters."""
    return _HEX2[digests].view(np.uint8)


def hmac_sm3_hex(values: pl.Series, key: bytes) -> pl.Series:
    """HMAC-SM3 hex tokens (64 lowercase characters) of a String Series without nulls, in
    order; equal to ``hmac.new(key, v.encode("utf-8"), "sm3").hexdigest()`` per value."""
    n = values.len()
    if n == 0:
        return pl.Series(values.name, [], dtype=pl.String)
    inner, outer = _pad_states(key)
    lengths = values.str.len_bytes().to_numpy()
    tokens = np.empty((n, 64), dtype=np.uint8)
    jobs: list[tuple[np.ndarray | slice, np.ndarray]] = []
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        same = values.gather(rows) if rows.size != n else values
        raw = same.str.join("").item().encode("utf-8") if length else b""
        msgs = np.frombuffer(raw, dtype=np.uint8).reshape(rows.size, length)
        for start in range(0, rows.size, LANES):
            # one length class (the usual ID column): rows in order, a slice, no scatter
            where = slice(start, start + LANES) if rows.size == n else rows[start : start + LANES]
            jobs.append((where, msgs[start : start + LANES]))

    def run(job: tuple[np.ndarray | slice, np.ndarray]) -> None:
        where, msgs = job
        tokens[where] = _hex(_hmac_same_length(msgs, inner, outer))

    if len(jobs) > 1 and _threads() > 1:
        # numpy releases the GIL inside each array operation: chunks hash on several cores.
        list(_pool().map(run, jobs))
    else:
        for job in jobs:
            run(job)
    return pl.Series(values.name, tokens.view("S64")[:, 0]).cast(pl.String)


def _threads() -> int:
    """Threads for one batch: $SHUYU_HMAC_THREADS, else the cores this process may use."""
    env = os.environ.get("SHUYU_HMAC_THREADS")
    if env:
        return max(int(env), 1)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_threads(), thread_name_prefix="shuyu-sm3")
        return _POOL
