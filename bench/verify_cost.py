"""CPU per signature verification, for the keys a peer may make us verify.

    python -m bench.verify_cost

A host key (client side, once per key exchange) or an authorized user key
(server side, at most MaxAuthTries times per connection) is verified in
the event loop; this prints what one verification costs for the cheapest
and the most expensive keys hostkey.py accepts (RSA up to 16384 bits, e up
to 64 bits). A verification costs the same whether the signature is good
or not (one modular exponentiation), so the RSA moduli and signatures here
are random odd numbers, which spares generating a 16384-bit key. A
benchmark, never a pass/fail test."""

from __future__ import annotations

import os
import time

from cryptography.hazmat.primitives.asymmetric import ed25519

from hashike.proto.hostkey import PublicKey
from hashike.proto.wire import encode_mpint, encode_string

E_64 = (1 << 64) - 1  # the largest exponent hostkey.py accepts
DATA = b"exchange hash" * 4


def _rsa_case(bits: int, e: int) -> tuple[PublicKey, bytes]:
    n = int.from_bytes(os.urandom(bits // 8), "big") | (1 << (bits - 1)) | 1
    signature = (int.from_bytes(os.urandom(bits // 8), "big") % n).to_bytes(bits // 8, "big")
    blob = encode_string("ssh-rsa") + encode_mpint(e) + encode_mpint(n)
    return PublicKey.from_blob(blob), encode_string("rsa-sha2-512") + encode_string(signature)


def _ed25519_case() -> tuple[PublicKey, bytes]:
    private = ed25519.Ed25519PrivateKey.generate()
    blob = encode_string("ssh-ed25519") + encode_string(private.public_key().public_bytes_raw())
    return PublicKey.from_blob(blob), encode_string("ssh-ed25519") + encode_string(private.sign(DATA))


def _cpu_ms(key: PublicKey, sig: bytes, rounds: int) -> float:
    algorithm = "ssh-ed25519" if key.key_type == "ssh-ed25519" else "rsa-sha2-512"
    start = time.process_time()
    for _ in range(rounds):
        key.verify(sig, DATA, (algorithm,))
    return (time.process_time() - start) / rounds * 1000


def main() -> None:
    cases = [("ssh-ed25519", _ed25519_case())]
    for bits, e in ((3072, 65537), (3072, E_64), (16384, 65537), (16384, E_64)):
        cases.append((f"ssh-rsa, {bits}-bit n, {e.bit_length()}-bit e", _rsa_case(bits, e)))
    print("| key | CPU ms per verification |\n|---|---:|")
    for name, (key, sig) in cases:
        print(f"| {name} | {_cpu_ms(key, sig, 50):.2f} |")


if __name__ == "__main__":
    main()
