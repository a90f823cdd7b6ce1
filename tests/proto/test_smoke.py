from hashike.proto.events import ServiceAccepted
from tests.proto.pair import ConnectionPair


def test_handshake_reaches_userauth() -> None:
    pair = ConnectionPair()
    pair.pump()
    assert any(isinstance(e, ServiceAccepted) for e in pair.client_events), pair.client_events
