"""Tests for hashike.keys.keypair, including interop with OpenSSH's ssh-keygen."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashike.keys.keypair import (
    KeyFileError,
    PassphraseRequired,
    generate_private_key,
    load_private_key,
    load_public_key_file,
    write_private_key,
)
from hashike.proto.hostkey import KeyFormatError, PrivateKey, PublicKey
from hashike.proto.wire import Reader, encode_mpint, encode_string, encode_uint32

SSH_KEYGEN = "/usr/bin/ssh-keygen"
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)
ALL_SIG_ALGS = (
    "ssh-ed25519",
    "ssh-rsa",
    "rsa-sha2-256",
    "rsa-sha2-512",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)
DATA = b"session id || userauth request"


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKey]:
    return {key_type: generate_private_key(key_type, comment=f"{key_type}@test") for key_type in KEY_TYPES}


def sig_cases() -> list[tuple[str, str]]:
    return [
        ("ssh-ed25519", "ssh-ed25519"),
        ("ssh-rsa", "rsa-sha2-256"),
        ("ssh-rsa", "rsa-sha2-512"),
        *((t, t) for t in KEY_TYPES if t.startswith("ecdsa")),
    ]


def split_sig(blob: bytes) -> tuple[str, bytes]:
    reader = Reader(blob)
    alg, sig = reader.ascii(), reader.string()
    reader.check_end()
    return alg, sig


# --- signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize(("key_type", "alg"), sig_cases())
def test_sign_verify_round_trip(keys: dict[str, PrivateKey], key_type: str, alg: str) -> None:
    key = keys[key_type]
    assert key.key_type == key_type
    assert alg in key.signature_algorithms()
    blob = key.sign(DATA, alg)
    assert split_sig(blob)[0] == alg
    pub = key.public_key
    assert pub.verify(blob, DATA, ALL_SIG_ALGS)
    # A public key rebuilt from the wire verifies just the same.
    assert PublicKey.from_blob(pub.blob).verify(blob, DATA, (alg,))
    assert not pub.verify(blob, DATA + b"x", ALL_SIG_ALGS)
    assert not pub.verify(blob, DATA, tuple(a for a in ALL_SIG_ALGS if a != alg))
    assert not pub.verify(blob, DATA, ())
    # Any single flipped bit (header, length, or signature body) is refused.
    for i in range(0, len(blob), max(1, len(blob) // 40)):
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= bit
            assert not pub.verify(bytes(bad), DATA, ALL_SIG_ALGS)
    assert not pub.verify(blob + b"\0", DATA, ALL_SIG_ALGS)
    assert not pub.verify(blob[:-1], DATA, ALL_SIG_ALGS)
    # Another key of the same type does not verify it.
    other = generate_private_key(key_type) if key_type != "ssh-rsa" else None
    if other is not None:
        assert not other.public_key.verify(blob, DATA, ALL_SIG_ALGS)


def test_signature_algorithms(keys: dict[str, PrivateKey]) -> None:
    assert keys["ssh-ed25519"].signature_algorithms() == ("ssh-ed25519",)
    assert keys["ssh-rsa"].signature_algorithms() == ("rsa-sha2-512", "rsa-sha2-256")
    for t in KEY_TYPES[2:]:
        assert keys[t].signature_algorithms() == (t,)


def test_sign_refuses_foreign_algorithm(keys: dict[str, PrivateKey]) -> None:
    with pytest.raises(ValueError):
        keys["ssh-rsa"].sign(DATA, "ssh-rsa")
    with pytest.raises(ValueError):
        keys["ssh-ed25519"].sign(DATA, "ecdsa-sha2-nistp256")
    with pytest.raises(ValueError):
        keys["ecdsa-sha2-nistp256"].sign(DATA, "ecdsa-sha2-nistp384")


def test_rsa_sha256_and_sha512_are_not_interchangeable(keys: dict[str, PrivateKey]) -> None:
    key = keys["ssh-rsa"]
    _, sig = split_sig(key.sign(DATA, "rsa-sha2-256"))
    relabelled = encode_string("rsa-sha2-512") + encode_string(sig)
    assert not key.public_key.verify(relabelled, DATA, ALL_SIG_ALGS)


def test_ssh_rsa_sha1_signature_is_always_refused(keys: dict[str, PrivateKey]) -> None:
    key = keys["ssh-rsa"]
    crypto_key = key._key
    assert isinstance(crypto_key, rsa.RSAPrivateKey)
    sha1_sig = crypto_key.sign(DATA, padding.PKCS1v15(), hashes.SHA1())
    blob = encode_string("ssh-rsa") + encode_string(sha1_sig)
    assert not key.public_key.verify(blob, DATA, ALL_SIG_ALGS)
    assert not key.public_key.verify(blob, DATA, ("ssh-rsa",))
    # Nor is a SHA-1 signature relabelled as a SHA-2 one.
    relabelled = encode_string("rsa-sha2-256") + encode_string(sha1_sig)
    assert not key.public_key.verify(relabelled, DATA, ALL_SIG_ALGS)


def test_rsa_signature_missing_leading_zero_is_accepted(keys: dict[str, PrivateKey]) -> None:
    # RFC 8332 §3 wants full length; OpenSSH (and we) restore dropped leading zeros.
    key = keys["ssh-rsa"]
    for i in range(2000):
        data = DATA + str(i).encode()
        _, sig = split_sig(key.sign(data, "rsa-sha2-256"))
        if sig[0] == 0:
            short = encode_string("rsa-sha2-256") + encode_string(sig.lstrip(b"\0"))
            assert key.public_key.verify(short, data, ("rsa-sha2-256",))
            return
    pytest.fail("no signature with a leading zero octet in 2000 tries")


def test_signature_for_wrong_key_type_is_refused(keys: dict[str, PrivateKey]) -> None:
    ed_sig = keys["ssh-ed25519"].sign(DATA, "ssh-ed25519")
    ec_sig = keys["ecdsa-sha2-nistp256"].sign(DATA, "ecdsa-sha2-nistp256")
    assert not keys["ssh-rsa"].public_key.verify(ed_sig, DATA, ALL_SIG_ALGS)
    assert not keys["ecdsa-sha2-nistp256"].public_key.verify(ed_sig, DATA, ALL_SIG_ALGS)
    assert not keys["ssh-ed25519"].public_key.verify(ec_sig, DATA, ALL_SIG_ALGS)
    assert not keys["ecdsa-sha2-nistp384"].public_key.verify(ec_sig, DATA, ALL_SIG_ALGS)


def test_ecdsa_signature_malformed_inner_blob(keys: dict[str, PrivateKey]) -> None:
    key = keys["ecdsa-sha2-nistp256"]
    alg = "ecdsa-sha2-nistp256"
    _, sig = split_sig(key.sign(DATA, alg))
    reader = Reader(sig)
    r, s = reader.mpint(), reader.mpint()
    n = ec.SECP256R1().key_size
    for inner in (
        sig + b"\0",  # trailing bytes inside
        encode_mpint(r),  # s missing
        encode_mpint(-r) + encode_mpint(s),
        encode_mpint(0) + encode_mpint(s),
        encode_mpint(r) + encode_mpint(s + (1 << n)),
        b"",
    ):
        assert not key.public_key.verify(encode_string(alg) + encode_string(inner), DATA, (alg,))


# --- public key blobs and lines ----------------------------------------------------------


def test_public_key_blob_layout(keys: dict[str, PrivateKey]) -> None:
    ed = Reader(keys["ssh-ed25519"].public_key.blob)
    assert ed.ascii() == "ssh-ed25519" and len(ed.string()) == 32
    ed.check_end()
    rs = Reader(keys["ssh-rsa"].public_key.blob)
    assert rs.ascii() == "ssh-rsa" and rs.mpint() == 65537 and rs.mpint().bit_length() == 3072
    rs.check_end()
    for t, curve, size in (("ecdsa-sha2-nistp256", "nistp256", 65), ("ecdsa-sha2-nistp521", "nistp521", 133)):
        r = Reader(keys[t].public_key.blob)
        assert (r.ascii(), r.ascii(), len(r.string())) == (t, curve, size)
        r.check_end()


def rsa_blob(e: int, n: int) -> bytes:
    return encode_string("ssh-rsa") + encode_mpint(e) + encode_mpint(n)


def test_from_blob_rejects_malformed(keys: dict[str, PrivateKey]) -> None:
    ed = keys["ssh-ed25519"].public_key.blob
    ec_blob = keys["ecdsa-sha2-nistp256"].public_key.blob
    rsa_key = keys["ssh-rsa"].public_key._key
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    rsa_numbers = rsa_key.public_numbers()
    point = Reader(ec_blob)
    _ = point.ascii(), point.ascii()
    q = point.string()
    bad_point = q[:-1] + bytes([q[-1] ^ 1])
    small = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
    cases = [
        b"",
        ed + b"\0",
        ed[:-1],
        encode_string("ssh-ed25519") + encode_string(b"\1" * 31),
        encode_string("ssh-ed25519") + encode_string(b"\1" * 33),
        encode_string("ssh-dss") + encode_mpint(5),
        encode_string("ssh-ed25519-cert-v01@openssh.com") + encode_string(b"\1" * 32),
        encode_string("ecdsa-sha2-nistp256") + encode_string("nistp256") + encode_string(bad_point),
        encode_string("ecdsa-sha2-nistp256") + encode_string("nistp384") + encode_string(q),
        encode_string("ecdsa-sha2-nistp384") + encode_string("nistp384") + encode_string(q),
        encode_string("ecdsa-sha2-nistp256") + encode_string("nistp256") + encode_string(b"\x02" + q[1:33]),
        encode_string("ecdsa-sha2-nistp256") + encode_string("nistp256") + encode_string(b"\0"),
        rsa_blob(65537, (1 << 1022) + 1),  # 1023 bits
        rsa_blob(65537, (1 << 16385) - 1),  # 16385 bits
        rsa_blob(-65537, rsa_numbers.n),
        rsa_blob(65537, -rsa_numbers.n),
        rsa_blob(65536, rsa_numbers.n),  # even exponent
        rsa_blob(rsa_numbers.n + 2, rsa_numbers.n),  # e > n
        # Non-canonical mpint: a superfluous leading zero octet (RFC 4251 §5).
        encode_string("ssh-rsa") + encode_string(b"\0\x01\x00\x01") + encode_mpint(rsa_numbers.n),
        rsa_blob(65537, rsa_numbers.n) + b"\0",
    ]
    for blob in cases:
        with pytest.raises(KeyFormatError):
            PublicKey.from_blob(blob)
    # The smallest and largest RSA sizes we accept.
    assert PublicKey.from_blob(rsa_blob(small.e, small.n)).key_type == "ssh-rsa"
    assert PublicKey.from_blob(rsa_blob(65537, (1 << 16384) - 1)).key_type == "ssh-rsa"


def test_openssh_line_round_trip(keys: dict[str, PrivateKey]) -> None:
    for key_type, key in keys.items():
        pub = key.public_key
        line = pub.openssh_line("me@host")
        kt, b64, comment = line.split(" ")
        assert (kt, comment) == (key_type, "me@host")
        assert base64.b64decode(b64) == pub.blob
        assert PublicKey.from_openssh_line(line) == pub
        assert PublicKey.from_openssh_line(pub.openssh_line()) == pub
        assert pub.openssh_line() == f"{kt} {b64}"
        assert PublicKey.from_openssh_line(f"  {kt}\t{b64}  many words here \n") == pub


def test_openssh_line_rejects_bad_lines(keys: dict[str, PrivateKey]) -> None:
    ed = keys["ssh-ed25519"].public_key
    b64 = base64.b64encode(ed.blob).decode()
    for line in (
        "",
        "ssh-ed25519",
        f"ssh-rsa {b64}",
        f"ssh-ed25519 {b64[:-2]}",
        f"ssh-ed25519 {b64}é",
        f"ssh-ed25519 !{b64}",
        f"ssh-ed25519 {b64} a\nb",
        "x " * 40000,
    ):
        with pytest.raises(KeyFormatError):
            PublicKey.from_openssh_line(line)
    with pytest.raises(ValueError):
        ed.openssh_line("two\nlines")


def test_fingerprint_and_equality(keys: dict[str, PrivateKey]) -> None:
    pub = keys["ssh-ed25519"].public_key
    expected = base64.b64encode(hashlib.sha256(pub.blob).digest()).decode().rstrip("=")
    assert pub.fingerprint() == "SHA256:" + expected
    assert "=" not in pub.fingerprint() and len(pub.fingerprint()) == 7 + 43
    same = PublicKey.from_blob(pub.blob)
    assert same == pub and hash(same) == hash(pub) and len({same, pub}) == 1
    assert pub != keys["ssh-rsa"].public_key
    assert pub != pub.blob
    assert pub.fingerprint() in repr(pub) and pub.fingerprint() in repr(keys["ssh-ed25519"])


# --- generation -------------------------------------------------------------------------


def test_generate_variants() -> None:
    assert generate_private_key().key_type == "ssh-ed25519"
    assert generate_private_key("ed25519", comment="c").comment == "c"
    assert generate_private_key("ecdsa").key_type == "ecdsa-sha2-nistp256"
    assert generate_private_key("ecdsa", 384).key_type == "ecdsa-sha2-nistp384"
    assert generate_private_key("ecdsa-sha2-nistp521", 521).key_type == "ecdsa-sha2-nistp521"
    for key_type, bits in (
        ("rsa", 2048),
        ("ssh-rsa", 1024),
        ("rsa", 16392),
        ("ecdsa", 512),
        ("ecdsa-sha2-nistp256", 384),
        ("ssh-dss", None),
        ("ed25519", 512),
        ("ssh-ed448", None),
    ):
        with pytest.raises(ValueError):
            generate_private_key(key_type, bits)


def test_private_key_refuses_unsupported_curve() -> None:
    with pytest.raises(ValueError):
        PrivateKey(ec.generate_private_key(ec.SECP256K1()))


# --- key files ----------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", KEY_TYPES)
@pytest.mark.parametrize("passphrase", [None, b"correct horse"])
def test_write_load_round_trip(
    keys: dict[str, PrivateKey], tmp_path: Path, key_type: str, passphrase: bytes | None
) -> None:
    key = keys[key_type]
    path = tmp_path / "id_test"
    write_private_key(key, path, passphrase)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert Path(f"{path}.pub").read_text() == key.public_key.openssh_line(key.comment) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id_test", "id_test.pub"]  # no temp files left
    loaded = load_private_key(path, passphrase)
    assert loaded.public_key == key.public_key
    assert loaded.comment == key.comment
    assert load_public_key_file(f"{path}.pub") == key.public_key
    alg = loaded.signature_algorithms()[0]
    assert key.public_key.verify(loaded.sign(DATA, alg), DATA, (alg,))
    if passphrase is not None:
        with pytest.raises(PassphraseRequired) as required:
            load_private_key(path)
        assert required.value.path == str(path)
        with pytest.raises(KeyFileError, match="incorrect passphrase supplied to decrypt private key"):
            load_private_key(path, b"wrong")
    else:
        # A passphrase for an unencrypted key is ignored, as ssh-keygen -P does.
        assert load_private_key(path, b"unused").public_key == key.public_key


def test_write_replaces_existing_file(keys: dict[str, PrivateKey], tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("old")
    path.chmod(0o644)
    write_private_key(keys["ssh-ed25519"], path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_private_key(path).public_key == keys["ssh-ed25519"].public_key


def test_write_into_missing_directory(keys: dict[str, PrivateKey], tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"Saving key .* failed: No such file or directory"):
        write_private_key(keys["ssh-ed25519"], tmp_path / "nope" / "k")


def test_comment_ignored_when_pub_file_is_for_another_key(
    keys: dict[str, PrivateKey], tmp_path: Path
) -> None:
    path = tmp_path / "k"
    write_private_key(keys["ssh-ed25519"], path)
    Path(f"{path}.pub").write_text(keys["ssh-rsa"].public_key.openssh_line("other") + "\n")
    assert load_private_key(path).comment == ""


def test_load_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(KeyFileError, match=re.escape(f'Load key "{missing}": No such file or directory')):
        load_private_key(missing)
    with pytest.raises(KeyFileError, match="Is a directory"):
        load_private_key(tmp_path)
    garbage = tmp_path / "garbage"
    for content in (
        b"",
        b"hello",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    ):
        garbage.write_bytes(content)
        with pytest.raises(KeyFileError, match=re.escape(f'Load key "{garbage}": invalid format')):
            load_private_key(garbage)
    garbage.write_bytes(b"x" * (2 * 1024 * 1024))
    with pytest.raises(KeyFileError, match="invalid format"):
        load_private_key(garbage)
    with pytest.raises(KeyFileError, match="invalid format"):
        load_public_key_file(garbage)
    garbage.write_bytes(b"ssh-ed25519 AAAA\n")
    with pytest.raises(KeyFileError, match="invalid format"):
        load_public_key_file(garbage)
    with pytest.raises(KeyFileError, match="No such file"):
        load_public_key_file(missing)


def test_load_permission_denied(keys: dict[str, PrivateKey], tmp_path: Path) -> None:
    """Root reads any file, so as root the check runs in a child without the
    capabilities that bypass file permissions."""
    path = tmp_path / "k"
    write_private_key(keys["ssh-ed25519"], path)
    path.chmod(0)
    code = (
        "import sys\n"
        "from hashike.keys.keypair import KeyFileError, load_private_key\n"
        "try:\n    load_private_key(sys.argv[1])\n"
        "except KeyFileError as exc:\n    print(exc)\n"
    )
    argv = [sys.executable, "-c", code, str(path)]
    if os.geteuid() == 0:
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.stdout.strip() == f'Load key "{path}": Permission denied', result.stderr


def test_load_pkcs8_ed25519_and_unsupported_types(tmp_path: Path) -> None:
    ed = Ed25519PrivateKey.generate()
    path = tmp_path / "k"
    path.write_bytes(ed.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    assert load_private_key(path).key_type == "ssh-ed25519"
    for other in (ec.generate_private_key(ec.SECP256K1()), Ed448PrivateKey.generate()):
        path.write_bytes(other.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        with pytest.raises(KeyFileError, match="unknown or unsupported key type"):
            load_private_key(path)
    weak = rsa.generate_private_key(65537, 1024).private_bytes(
        Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()
    )
    path.write_bytes(weak)
    assert load_private_key(path).key_type == "ssh-rsa"  # 1024 bits: the least we accept, like OpenSSH


# --- interop with OpenSSH's ssh-keygen -------------------------------------------------------


def keygen(*args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run([SSH_KEYGEN, *args], input=stdin, capture_output=True, check=True, timeout=60)
    return done.stdout.decode() + done.stderr.decode()


KEYGEN_TYPES = [
    ("ed25519", None, "ssh-ed25519"),
    ("ecdsa", "256", "ecdsa-sha2-nistp256"),
    ("ecdsa", "384", "ecdsa-sha2-nistp384"),
    ("ecdsa", "521", "ecdsa-sha2-nistp521"),
    ("rsa", "2048", "ssh-rsa"),
]


# ssh-keygen -m: RFC4716 means OpenSSH's own private key format for -t ed25519/ecdsa/rsa;
# OpenSSH 9.2 writes ed25519 keys in its own format whatever -m says, so it only appears there.
FORMATS = {
    "RFC4716": "OPENSSH PRIVATE KEY",
    "PEM": "(RSA|EC) PRIVATE KEY",
    "PKCS8": "(ENCRYPTED )?PRIVATE KEY",
}
KEYGEN_CASES = [
    (*case, file_format)
    for case in KEYGEN_TYPES
    for file_format in FORMATS
    if case[0] != "ed25519" or file_format == "RFC4716"
]


@pytest.mark.interop
@pytest.mark.parametrize(("kind", "bits", "key_type", "file_format"), KEYGEN_CASES)
def test_load_ssh_keygen_keys(
    tmp_path: Path, kind: str, bits: str | None, key_type: str, file_format: str
) -> None:
    path = tmp_path / "id"
    size = ["-b", bits] if bits else []
    keygen("-q", "-t", kind, *size, "-m", file_format, "-N", "", "-C", "made by keygen", "-f", str(path))
    assert re.match(f"-----BEGIN {FORMATS[file_format]}-----", path.read_text())
    key = load_private_key(path)
    assert key.key_type == key_type
    assert key.comment == "made by keygen"  # from id.pub, which ssh-keygen wrote alongside
    pub = load_public_key_file(f"{path}.pub")
    assert pub == key.public_key
    assert keygen("-l", "-E", "sha256", "-f", str(path)).split()[1] == key.public_key.fingerprint()
    alg = key.signature_algorithms()[-1]
    assert pub.verify(key.sign(DATA, alg), DATA, (alg,))


@pytest.mark.interop
@pytest.mark.parametrize(("kind", "bits", "key_type", "file_format"), KEYGEN_CASES)
def test_load_ssh_keygen_encrypted_keys(
    tmp_path: Path, kind: str, bits: str | None, key_type: str, file_format: str
) -> None:
    path = tmp_path / "id"
    size = ["-b", bits] if bits else []
    keygen("-q", "-t", kind, *size, "-m", file_format, "-a", "4", "-N", "sesame-pw", "-f", str(path))
    assert re.match(f"-----BEGIN {FORMATS[file_format]}-----", path.read_text())
    with pytest.raises(PassphraseRequired):
        load_private_key(path)
    with pytest.raises(KeyFileError, match="incorrect passphrase supplied to decrypt private key"):
        load_private_key(path, b"nope-nope")
    key = load_private_key(path, b"sesame-pw")
    assert key.key_type == key_type
    assert key.public_key == load_public_key_file(f"{path}.pub")


@pytest.mark.interop
@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_ssh_keygen_reads_our_encrypted_key(
    keys: dict[str, PrivateKey], tmp_path: Path, key_type: str
) -> None:
    key = keys[key_type]
    path = tmp_path / "ours"
    write_private_key(key, path, b"pass")
    derived = keygen("-y", "-P", "pass", "-f", str(path)).split()
    assert derived[:2] == key.public_key.openssh_line().split()
    assert keygen("-l", "-f", f"{path}.pub").split()[1] == key.public_key.fingerprint()
    with pytest.raises(subprocess.CalledProcessError) as failed:
        keygen("-y", "-P", "wrong", "-f", str(path))
    assert b"incorrect passphrase supplied to decrypt private key" in failed.value.stderr


@pytest.mark.interop
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_dsa_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "id_dsa"
    keygen("-q", "-t", "dsa", "-N", "", "-f", str(path))
    with pytest.raises(KeyFileError, match="unknown or unsupported key type"):
        load_private_key(path)
    with pytest.raises(KeyFileError, match="invalid format"):
        load_public_key_file(f"{path}.pub")


# SSHSIG (OpenSSH PROTOCOL.sshsig) lets ssh-keygen check our raw signatures and make ones we check.
SSHSIG_NAMESPACE = "hashike-test"


def sshsig_signed_data(message: bytes) -> bytes:
    digest = hashlib.sha512(message).digest()
    return (
        b"SSHSIG"
        + encode_string(SSHSIG_NAMESPACE)
        + encode_string(b"")
        + encode_string("sha512")
        + (encode_string(digest))
    )


def sshsig_armor(public_key: PublicKey, signature_blob: bytes) -> str:
    blob = (
        b"SSHSIG"
        + encode_uint32(1)
        + encode_string(public_key.blob)
        + encode_string(SSHSIG_NAMESPACE)
        + encode_string(b"")
        + encode_string("sha512")
        + encode_string(signature_blob)
    )
    b64 = base64.b64encode(blob).decode()
    body = "\n".join(b64[i : i + 70] for i in range(0, len(b64), 70))
    return f"-----BEGIN SSH SIGNATURE-----\n{body}\n-----END SSH SIGNATURE-----\n"


def sshsig_unarmor(text: str) -> tuple[bytes, bytes]:
    lines = text.strip().splitlines()
    reader = Reader(base64.b64decode("".join(lines[1:-1])))
    assert reader.raw(6) == b"SSHSIG" and reader.uint32() == 1
    public_blob = reader.string()
    assert reader.ascii() == SSHSIG_NAMESPACE and reader.string() == b"" and reader.ascii() == "sha512"
    signature_blob = reader.string()
    reader.check_end()
    return public_blob, signature_blob


@pytest.mark.interop
@pytest.mark.parametrize(("kind", "bits", "key_type"), KEYGEN_TYPES)
def test_signatures_interoperate_with_ssh_keygen(
    tmp_path: Path, kind: str, bits: str | None, key_type: str
) -> None:
    path = tmp_path / "id"
    size = ["-b", bits] if bits else []
    keygen("-q", "-t", kind, *size, "-N", "", "-f", str(path))
    key = load_private_key(path)
    message = b"a message to sign\n"
    # ssh-keygen signs, we verify.
    (tmp_path / "msg").write_bytes(message)
    keygen("-Y", "sign", "-n", SSHSIG_NAMESPACE, "-f", str(path), str(tmp_path / "msg"))
    public_blob, signature_blob = sshsig_unarmor((tmp_path / "msg.sig").read_text())
    assert public_blob == key.public_key.blob
    signed = sshsig_signed_data(message)
    assert key.public_key.verify(signature_blob, signed, key.signature_algorithms())
    assert not key.public_key.verify(signature_blob, signed + b"x", key.signature_algorithms())
    # We sign, ssh-keygen verifies (with each algorithm the key type has).
    for alg in key.signature_algorithms():
        sig_file = tmp_path / f"ours-{alg}.sig"
        sig_file.write_text(sshsig_armor(key.public_key, key.sign(signed, alg)))
        out = keygen("-Y", "check-novalidate", "-n", SSHSIG_NAMESPACE, "-s", str(sig_file), stdin=message)
        assert "Good" in out


# --- hypothesis: the parsers are total ------------------------------------------------------


def mutations(base: bytes) -> st.SearchStrategy[bytes]:
    def mutate(data: bytes, index: int, value: int, cut: int) -> bytes:
        if not data:
            return bytes([value])
        i = index % len(data)
        return (
            (data[:i] + bytes([value]) + data[i + 1 :])[: len(data) - cut] if cut >= 0 else data + bytes(-cut)
        )

    return st.builds(mutate, st.just(base), st.integers(0, 10_000), st.integers(0, 255), st.integers(-3, 8))


@pytest.fixture(scope="module")
def blob_samples(keys: dict[str, PrivateKey]) -> list[bytes]:
    return [k.public_key.blob for k in keys.values()]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_from_blob_is_total(blob_samples: list[bytes], data: st.DataObject) -> None:
    blob = data.draw(
        st.one_of(
            st.binary(max_size=300),
            st.builds(
                lambda t, tail: encode_string(t) + tail, st.sampled_from(KEY_TYPES), st.binary(max_size=200)
            ),
            st.sampled_from(blob_samples).flatmap(mutations),
        )
    )
    try:
        key = PublicKey.from_blob(blob)
    except KeyFormatError:
        return
    assert key.blob == blob and key.key_type in KEY_TYPES


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_verify_is_total(keys: dict[str, PrivateKey], data: st.DataObject) -> None:
    key = keys[data.draw(st.sampled_from(KEY_TYPES))]
    alg = key.signature_algorithms()[0]
    good = key.sign(DATA, alg)
    blob = data.draw(
        st.one_of(
            st.binary(max_size=300),
            st.builds(
                lambda a, s: encode_string(a) + encode_string(s), st.sampled_from(ALL_SIG_ALGS), st.binary()
            ),
            st.builds(
                lambda a, r, s: encode_string(a) + encode_string(encode_mpint(r) + encode_mpint(s)),
                st.sampled_from(ALL_SIG_ALGS),
                st.integers(-(2**600), 2**600),
                st.integers(-(2**600), 2**600),
            ),
            mutations(good),
        )
    )
    result = key.public_key.verify(blob, DATA, ALL_SIG_ALGS)
    assert isinstance(result, bool)
    assert result == (blob == good)
