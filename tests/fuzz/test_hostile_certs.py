"""Hostile certificates: whatever bytes arrive as a certificate blob, the
parser ends in KeyFormatError or a Certificate, and every answer about a
parsed one (signature, checks, options) is a plain value, never an exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hashike.proto.certs import CERT_KEY_TYPES, Certificate, CertificateFields, CertType, sign_certificate
from hashike.proto.hostkey import KeyFormatError
from hashike.proto.wire import encode_string, encode_uint32, encode_uint64
from tests.fuzz.test_hostile_input import FAST, mutated
from tests.proto.test_certs import key

_FIELDS = CertificateFields(
    cert_type=CertType.USER,
    key_id="fuzz",
    principals=("alice", "bob"),
    critical_options=(("force-command", "/bin/true"), ("source-address", "10.0.0.0/8")),
    extensions=(("permit-pty", ""),),
)
SEEDS = [
    sign_certificate(key(user).public_key, key(ca, 1), _FIELDS).blob
    for user, ca in [
        ("ssh-ed25519", "ssh-ed25519"),
        ("ecdsa-sha2-nistp256", "ssh-rsa"),
        ("ssh-rsa", "ecdsa-sha2-nistp521"),
    ]
]
_CERT_FIELD = st.one_of(
    st.sampled_from(sorted(CERT_KEY_TYPES)).map(encode_string),
    st.binary(max_size=48).map(encode_string),
    st.integers(0, 2**64 - 1).map(encode_uint64),
    st.sampled_from([0, 1, 2, 3, 0xFFFFFFFF]).map(encode_uint32),
    st.lists(st.text(max_size=8).map(encode_string), max_size=4).map(
        lambda parts: encode_string(b"".join(parts))
    ),
    st.just(encode_string(key("ssh-ed25519", 1).public_key.blob)),
)


def _exercise(blob: bytes) -> None:
    try:
        cert = Certificate.from_blob(blob)
    except KeyFormatError:
        return
    assert isinstance(cert.signature_valid(), bool)
    for kind in CertType:
        why = cert.check(cert_type=kind, now=5, name="alice")
        assert why is None or why.startswith("Certificate invalid")
    cert.critical_option("force-command")
    cert.has_extension("permit-pty")
    assert Certificate.from_blob(cert.blob) == cert


@FAST
@given(st.data())
def test_mutated_certificates(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(SEEDS))
    _exercise(data.draw(mutated(seed)))


@FAST
@given(st.sampled_from(sorted(CERT_KEY_TYPES)), st.lists(_CERT_FIELD, max_size=16))
def test_certificates_from_fields(cert_type: str, fields: list[bytes]) -> None:
    _exercise(encode_string(cert_type) + b"".join(fields))


@FAST
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    _exercise(data)
