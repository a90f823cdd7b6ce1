"""UserAuthenticator with many accounts (hashiked's PrivilegeSeparation): a
login name is the OS account of that name, root never logs in, and a name
without an account is refused as one AllowUsers does not admit."""

from __future__ import annotations

import pwd

import pytest

from hashike.aio.server_auth import Account, UserAuthenticator

SERVER = Account("root", "/root", 0)
MISSING = "hashike-no-such-account"


@pytest.fixture(scope="module")
def daemon() -> pwd.struct_passwd:
    """An account every Debian system has; it is not root."""
    entry = pwd.getpwnam("daemon")
    assert entry.pw_uid != 0
    return entry


def test_account_named() -> None:
    root = Account.named("root")
    assert root is not None and (root.uid, root.home) == (0, pwd.getpwnam("root").pw_dir)
    assert Account.named(MISSING) is None
    assert Account.named("nul\0byte") is None


def test_default_admits_every_account_but_roots(daemon: pwd.struct_passwd) -> None:
    users = UserAuthenticator(account=SERVER, many_accounts=True)
    assert users.allow_users == ("*",)
    assert users.allowed(daemon.pw_name, "127.0.0.1")
    assert not users.allowed("root", "127.0.0.1")
    assert not users.allowed(MISSING, "127.0.0.1")
    assert not users.allowed("../daemon", "127.0.0.1")  # the path rules still hold


def test_allow_users_still_narrows(daemon: pwd.struct_passwd) -> None:
    users = UserAuthenticator(allow_users=("nobody",), account=SERVER, many_accounts=True)
    assert users.allowed("nobody", "127.0.0.1")
    assert not users.allowed(daemon.pw_name, "127.0.0.1")
    # An explicit root pattern does not let root in.
    assert not UserAuthenticator(allow_users=("root",), account=SERVER, many_accounts=True).allowed(
        "root", "127.0.0.1"
    )


def test_key_files_are_each_accounts(daemon: pwd.struct_passwd) -> None:
    users = UserAuthenticator(
        authorized_keys_files=(".ssh/authorized_keys", "/etc/keys/%u.%U"), account=SERVER, many_accounts=True
    )
    assert users.key_files(daemon.pw_name) == [
        f"{daemon.pw_dir}/.ssh/authorized_keys",
        f"/etc/keys/{daemon.pw_name}.{daemon.pw_uid}",
    ]
    # A name without an account (only ever asked for the dummy lookup) gets the server's.
    assert users.key_files(MISSING) == ["/root/.ssh/authorized_keys", f"/etc/keys/{MISSING}.0"]


def test_one_account_mode_is_unchanged(daemon: pwd.struct_passwd) -> None:
    users = UserAuthenticator(allow_users=("*",), account=SERVER)
    assert users.allowed(MISSING, "127.0.0.1")  # a label for the server's account
    assert users.key_files(daemon.pw_name) == ["/root/.ssh/authorized_keys"]
