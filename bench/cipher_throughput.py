"""Packet-layer cipher throughput, against `cryptography` doing the same work raw.

Run ``python -m bench.cipher_throughput [--seconds S] [--sizes 32K,max] [--json]``.

For every cipher in :data:`hashike.proto.config.SUPPORTED_CIPHERS` (AES-CTR once
per EtM MAC in :data:`~hashike.proto.config.SUPPORTED_MACS`) and every payload
size, one *step* is:

* **hashike**: ``PacketWriter.write(payload)`` + ``take()`` on one side, then
  ``PacketReader.feed()`` + ``next_payload()`` on the other, with a sealer and an
  opener built by ``make_sealer``/``make_opener`` from random keys. This is the
  whole packet layer: framing, padding, nonces/sequence numbers, MAC, copies.
* **raw**: the primitive alone on a payload of the same size, into preallocated
  buffers: AES-GCM ``encrypt_into`` + ``decrypt_into`` for the GCM ciphers,
  IETF ``ChaCha20Poly1305`` ``encrypt_into`` + ``decrypt_into`` for
  chacha20-poly1305@openssh.com (the OpenSSH construction needs four primitive
  calls per packet; the IETF AEAD is the floor it is measured against), and
  AES-CTR ``update_into`` + HMAC over ``seq || ciphertext`` (compute, then
  verify) + AES-CTR ``update_into`` for aes*-ctr with an EtM MAC.

MB/s counts payload bytes (10**6 bytes per MB) carried through one encrypt *and*
one decrypt. Each measurement runs for ``--seconds`` or ``--iterations`` steps,
whichever ends first; hashike and raw runs alternate, ``--runs`` times each, and
the median is reported. This is a benchmark: never assert on its numbers in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import cryptography
from cryptography.hazmat.primitives import hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from hashike.proto import ciphers
from hashike.proto.config import SUPPORTED_CIPHERS, SUPPORTED_MACS
from hashike.proto.packet import MAX_PAYLOAD, PacketReader, PacketWriter

__all__ = ["Result", "Suite", "hashike_step", "main", "measure", "raw_step", "run", "suites"]

Step = Callable[[], None]

_U32 = struct.Struct(">I")
DEFAULT_SIZES = (32 * 1024, MAX_PAYLOAD)


@dataclass(frozen=True, slots=True)
class Suite:
    """One cipher, with the MAC it is paired with (None for AEAD ciphers)."""

    cipher: str
    mac: str | None

    @property
    def label(self) -> str:
        return self.cipher if self.mac is None else f"{self.cipher} + {self.mac}"


@dataclass(frozen=True, slots=True)
class Result:
    cipher: str
    mac: str | None
    payload: int
    raw: str  # what the raw column measured
    hashike_mbps: float
    raw_mbps: float
    ratio: float
    hashike_runs: list[float]
    raw_runs: list[float]


def suites(names: Sequence[str] = SUPPORTED_CIPHERS) -> list[Suite]:
    out: list[Suite] = []
    for name in names:
        if ciphers.CIPHERS[name].aead:
            out.append(Suite(name, None))
        else:
            out.extend(Suite(name, mac) for mac in SUPPORTED_MACS)
    return out


def _keys(suite: Suite) -> tuple[bytes, bytes, bytes]:
    spec = ciphers.CIPHERS[suite.cipher]
    mac_size = ciphers.MACS[suite.mac].key_size if suite.mac is not None else 0
    return os.urandom(spec.key_size), os.urandom(spec.iv_size), os.urandom(mac_size)


def hashike_step(suite: Suite, payload: bytes) -> Step:
    """Seal ``payload`` with a PacketWriter and open it with a PacketReader."""
    key, iv, mac_key = _keys(suite)
    writer = PacketWriter(os.urandom)
    writer.set_sealer(ciphers.make_sealer(suite.cipher, suite.mac, key, iv, mac_key), reset_seq=True)
    reader = PacketReader()
    reader.set_opener(ciphers.make_opener(suite.cipher, suite.mac, key, iv, mac_key), reset_seq=True)
    n = len(payload)

    def step() -> None:
        writer.write(payload)
        reader.feed(writer.take())
        got = reader.next_payload()
        if got is None or len(got) != n:
            raise RuntimeError("packet did not round-trip")

    # One checked round trip before any timing: a fast wrong answer is no answer.
    writer.write(payload)
    reader.feed(writer.take())
    got = reader.next_payload()
    if got is None or bytes(got) != payload:
        raise RuntimeError(f"{suite.label}: payload did not round-trip")
    return step


def _raw_aead(aead: AESGCM | ChaCha20Poly1305, payload: bytes) -> Step:
    n = len(payload)
    # A fixed nonce is fine here: nothing leaves the process, and the per-packet
    # nonce arithmetic is exactly the kind of overhead the ratio should expose.
    nonce = os.urandom(12)
    aad = _U32.pack(n)
    sealed = bytearray(n + 16)
    opened = bytearray(n)

    def step() -> None:
        aead.encrypt_into(nonce, payload, aad, sealed)
        aead.decrypt_into(nonce, sealed, aad, opened)

    step()
    if bytes(opened) != payload:
        raise RuntimeError("raw AEAD did not round-trip")
    return step


def _raw_ctr_etm(suite: Suite, payload: bytes) -> Step:
    assert suite.mac is not None
    key, iv, mac_key = _keys(suite)
    digest = ciphers.MACS[suite.mac].digest
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    decryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
    mac = hmac.HMAC(mac_key, digest())
    n = len(payload)
    sealed = bytearray(n + 15)  # update_into wants block_size - 1 spare bytes
    opened = bytearray(n + 15)
    sealed_view = memoryview(sealed)[:n]
    seq = _U32.pack(7)

    def step() -> None:
        encryptor.update_into(payload, sealed)
        h = mac.copy()
        h.update(seq)
        h.update(sealed_view)
        tag = h.finalize()
        h = mac.copy()
        h.update(seq)
        h.update(sealed_view)
        h.verify(tag)
        decryptor.update_into(sealed_view, opened)

    step()
    if bytes(opened[:n]) != payload:
        raise RuntimeError("raw AES-CTR did not round-trip")
    return step


def raw_step(suite: Suite, payload: bytes) -> tuple[str, Step]:
    """The same work done with `cryptography` directly, and a description of it."""
    key, _, _ = _keys(suite)
    if suite.cipher.endswith("-gcm@openssh.com"):
        return "AESGCM encrypt_into+decrypt_into", _raw_aead(AESGCM(key), payload)
    if suite.cipher == "chacha20-poly1305@openssh.com":
        return "ChaCha20Poly1305 (IETF) encrypt_into+decrypt_into", _raw_aead(
            ChaCha20Poly1305(key[:32]), payload
        )
    assert suite.mac is not None
    return f"AES-CTR update_into + HMAC-{ciphers.MACS[suite.mac].digest().name.upper()}", _raw_ctr_etm(
        suite, payload
    )


def measure(step: Step, nbytes: int, seconds: float, iterations: int) -> float:
    """MB/s of ``step`` (which carries ``nbytes``), run for ``seconds`` or ``iterations``."""
    clock = time.perf_counter
    count = 0
    start = clock()
    deadline = start + seconds
    while True:
        step()
        count += 1
        now = clock()
        if now >= deadline or count >= iterations:
            break
    return nbytes * count / (now - start) / 1e6


def run(
    selected: Sequence[Suite],
    sizes: Sequence[int],
    seconds: float,
    iterations: int,
    runs: int,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    results: list[Result] = []
    for suite in selected:
        for size in sizes:
            payload = os.urandom(size)
            ours = hashike_step(suite, payload)
            raw_name, raw = raw_step(suite, payload)
            warm = min(0.1, seconds)
            measure(ours, size, warm, iterations)
            measure(raw, size, warm, iterations)
            ours_runs: list[float] = []
            raw_runs: list[float] = []
            # Alternate, so that a noisy neighbour hurts both columns alike.
            for _ in range(runs):
                ours_runs.append(measure(ours, size, seconds, iterations))
                raw_runs.append(measure(raw, size, seconds, iterations))
            ours_mbps = statistics.median(ours_runs)
            raw_mbps = statistics.median(raw_runs)
            result = Result(
                cipher=suite.cipher,
                mac=suite.mac,
                payload=size,
                raw=raw_name,
                hashike_mbps=round(ours_mbps, 1),
                raw_mbps=round(raw_mbps, 1),
                ratio=round(ours_mbps / raw_mbps, 3),
                hashike_runs=[round(x, 1) for x in ours_runs],
                raw_runs=[round(x, 1) for x in raw_runs],
            )
            results.append(result)
            if progress is not None:
                progress(f"{suite.label} {size}: {result.hashike_mbps} / {result.raw_mbps} MB/s")
    return results


def markdown(results: Sequence[Result]) -> str:
    lines = [
        "| cipher | payload | hashike MB/s | raw MB/s | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        label = Suite(r.cipher, r.mac).label
        lines.append(f"| {label} | {r.payload} | {r.hashike_mbps:,.0f} | {r.raw_mbps:,.0f} | {r.ratio:.2f} |")
    return "\n".join(lines)


def _size(text: str) -> int:
    text = text.strip().lower()
    if text == "max":
        return MAX_PAYLOAD
    scale = 1
    for suffix, factor in (("kib", 1024), ("k", 1024), ("mib", 1 << 20), ("m", 1 << 20)):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], factor
            break
    try:
        value = int(text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r}") from None
    if not 1 <= value <= MAX_PAYLOAD:
        raise argparse.ArgumentTypeError(f"size {value} outside 1..{MAX_PAYLOAD} (MAX_PAYLOAD)")
    return value


def _sizes(text: str) -> list[int]:
    return [_size(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.cipher_throughput", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--seconds", type=float, default=1.0, help="time bound of one run (default 1.0)")
    p.add_argument("--iterations", type=int, default=100_000, help="step bound of one run (default 100000)")
    p.add_argument("--runs", type=int, default=3, help="runs per measurement; the median is reported")
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        help="comma-separated payload sizes: bytes, 32K, or 'max' (= MAX_PAYLOAD); default 32K,max",
    )
    p.add_argument(
        "--ciphers",
        type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        default=list(SUPPORTED_CIPHERS),
        help="comma-separated subset of the supported ciphers",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    unknown = [c for c in args.ciphers if c not in SUPPORTED_CIPHERS]
    if unknown:
        print(f"unsupported cipher(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.seconds <= 0 or args.iterations < 1 or args.runs < 1:
        print("--seconds, --iterations and --runs must be positive", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = run(
        suites(args.ciphers),
        args.sizes,
        args.seconds,
        args.iterations,
        args.runs,
        None if args.quiet else progress,
    )
    env = {
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "seconds": args.seconds,
        "iterations": args.iterations,
        "runs": args.runs,
    }
    if args.json:
        print(json.dumps({"env": env, "results": [asdict(r) for r in results]}, indent=2))
    else:
        print(
            f"Python {env['python']}, cryptography {env['cryptography']}, {env['machine']} x{env['cpus']}; "
            f"median of {args.runs} runs of <= {args.seconds} s / {args.iterations} steps; "
            "MB/s = payload bytes encrypted and decrypted per second / 10**6"
        )
        print()
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
