"""Host certificates in the transport (PROTOCOL.certkeys): a server holding
one offers its algorithm and sends the certificate as K_S, signing with the
certified key; a client gets the certificate in HostKeyReceived."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hashike.proto.certs import Certificate, CertificateFields, CertType, sign_certificate
from hashike.proto.config import DEFAULT_HOST_KEY_ALGORITHMS, SUPPORTED_HOST_KEY_ALGORITHMS, TransportConfig
from hashike.proto.events import HostKeyReceived, KexCompleted
from hashike.proto.hostkey import PrivateKey
from tests.proto.pair import ConnectionPair, events_of, host_key

CERT_ALGORITHM = {
    "ssh-ed25519": "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "ssh-rsa": "rsa-sha2-512-cert-v01@openssh.com",
}


def host_certificate(key: PrivateKey) -> Certificate:
    ca = host_key("ecdsa-sha2-nistp256")
    fields = CertificateFields(cert_type=CertType.HOST, key_id="host", principals=("example.com",))
    return sign_certificate(key.public_key, ca, fields)


def negotiated_key(pair: ConnectionPair) -> tuple[str, object]:
    pair.pump()
    received = events_of(pair.client_events, HostKeyReceived)
    kex = events_of(pair.client_events, KexCompleted)
    assert len(received) == 1 and kex, pair.client_events
    assert received[0].algorithm == kex[0].negotiated.host_key
    return received[0].algorithm, received[0].key


@pytest.mark.parametrize("key_type", sorted(CERT_ALGORITHM))
def test_server_offers_its_certificate(key_type: str) -> None:
    key = host_key(key_type)
    cert = host_certificate(key)
    algorithm, received = negotiated_key(ConnectionPair(host_keys=(key,), host_certificates=(cert,)))
    assert algorithm == CERT_ALGORITHM[key_type]
    assert isinstance(received, Certificate) and received == cert
    assert received.key == key.public_key


def test_rsa_certificate_with_sha256_only() -> None:
    key = host_key("ssh-rsa")
    client = TransportConfig(host_key_algorithms=("rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-256"))
    pair = ConnectionPair(client_config=client, host_keys=(key,), host_certificates=(host_certificate(key),))
    assert negotiated_key(pair)[0] == "rsa-sha2-256-cert-v01@openssh.com"


def test_client_without_certificate_algorithms_gets_the_plain_key() -> None:
    key = host_key()
    client = TransportConfig(host_key_algorithms=SUPPORTED_HOST_KEY_ALGORITHMS)
    pair = ConnectionPair(client_config=client, host_keys=(key,), host_certificates=(host_certificate(key),))
    algorithm, received = negotiated_key(pair)
    assert algorithm == "ssh-ed25519"
    assert not isinstance(received, Certificate) and received == key.public_key


def test_certificate_of_another_key_is_not_offered() -> None:
    key = host_key()
    other = host_certificate(host_key("ecdsa-sha2-nistp384"))
    algorithm, received = negotiated_key(ConnectionPair(host_keys=(key,), host_certificates=(other,)))
    assert algorithm == "ssh-ed25519" and received == key.public_key


def test_server_without_a_certificate_offers_no_certificate_algorithm() -> None:
    pair = ConnectionPair(host_keys=(host_key(),))
    assert negotiated_key(pair)[0] == "ssh-ed25519"
    assert DEFAULT_HOST_KEY_ALGORITHMS[0] == "ssh-ed25519-cert-v01@openssh.com"


def test_rekey_keeps_the_certificate() -> None:
    key = host_key()
    pair = ConnectionPair(host_keys=(key,), host_certificates=(host_certificate(key),))
    negotiated_key(pair)
    pair.server.start_rekey()
    pair.pump()
    assert len(events_of(pair.client_events, KexCompleted)) == 2
    assert not pair.client.closed and not pair.server.closed


def test_only_certificate_algorithms_need_a_certificate() -> None:
    # The server's list filters by what it holds: configuring only the
    # certificate algorithm with no certificate leaves no host key to offer.
    key = host_key()
    config = replace(TransportConfig(), host_key_algorithms=("ssh-ed25519-cert-v01@openssh.com",))
    with pytest.raises(Exception, match="no host key"):
        ConnectionPair(server_config=config, host_keys=(key,))
