"""``hashike-keygen``: make key pairs in OpenSSH's format, and hash passwords
for hashiked's ``PasswordFile``.

Key options follow ssh-keygen(1): ``-t``, ``-b``, ``-f``, ``-N``, ``-C``,
``-l`` (show a fingerprint). ``-P`` hashes a password (read from the terminal,
or from standard input when it is not a terminal) into a ``user:hash`` line.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

import bcrypt

from hashike.keys.keypair import (
    KeyFileError,
    generate_private_key,
    load_private_key,
    load_public_key_file,
    write_private_key,
)

__all__ = ["hash_password", "main"]

EXIT_FAILURE = 1  # ssh-keygen's status for every failure
MAX_PASSWORD = 1024  # hashiked refuses longer passwords, so never hash one
_TYPES = {"ed25519": "ssh-ed25519", "ecdsa": "ecdsa", "rsa": "rsa"}


def hash_password(password: str) -> str:
    """A bcrypt hash for PasswordFile. bcrypt reads at most 72 bytes, so
    longer passwords are refused rather than silently truncated."""
    data = password.encode("utf-8")
    if len(data) > 72:
        raise ValueError("passwords longer than 72 bytes cannot be hashed with bcrypt")
    return bcrypt.hashpw(data, bcrypt.gensalt()).decode("ascii")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hashike-keygen",
        usage="hashike-keygen [-t ed25519|ecdsa|rsa] [-b bits] [-f file] [-N passphrase] [-C comment]\n"
        "       hashike-keygen -l -f file\n"
        "       hashike-keygen -P user",
        description="Create key pairs in OpenSSH's format, or hash a password for hashiked's PasswordFile.",
    )
    p.add_argument(
        "-t", dest="type", choices=sorted(_TYPES), default="ed25519", help="key type (default ed25519)"
    )
    p.add_argument(
        "-b", dest="bits", type=int, help="bits: rsa 3072 (default) or more; ecdsa 256, 384 or 521"
    )
    p.add_argument("-f", dest="file", help="key file (default ~/.ssh/id_TYPE)")
    p.add_argument(
        "-N", dest="passphrase", help="passphrase ('' for none; asked for when omitted on a terminal)"
    )
    p.add_argument("-C", dest="comment", help="comment (default user@host)")
    p.add_argument(
        "-l", dest="fingerprint", action="store_true", help="show the fingerprint of the key in -f"
    )
    p.add_argument(
        "-P", dest="password_user", metavar="user", help="print 'user:bcrypt-hash' for PasswordFile"
    )
    return p


def _ask_passphrase() -> bytes:
    if not sys.stdin.isatty():
        return b""
    first = getpass.getpass("Enter passphrase (empty for no passphrase): ")
    if first != getpass.getpass("Enter same passphrase again: "):
        raise ValueError("Passphrases do not match.")
    return first.encode("utf-8")


def _generate(args: argparse.Namespace) -> None:
    path = os.path.expanduser(args.file or f"~/.ssh/id_{args.type}")
    if os.path.exists(path):
        raise ValueError(f"{path} already exists.")
    comment = args.comment if args.comment is not None else f"{getpass.getuser()}@{os.uname().nodename}"
    print(f"Generating public/private {args.type} key pair.")
    key = generate_private_key(_TYPES[args.type], bits=args.bits, comment=comment)
    passphrase = args.passphrase.encode("utf-8") if args.passphrase is not None else _ask_passphrase()
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    write_private_key(key, path, passphrase or None)
    print(f"Your identification has been saved in {path}")
    print(f"Your public key has been saved in {path}.pub")
    print("The key fingerprint is:")
    print(f"{key.public_key.fingerprint()} {comment}")


def _show_fingerprint(args: argparse.Namespace) -> None:
    if not args.file:
        raise ValueError("-l needs -f file")
    path = os.path.expanduser(args.file)
    if path.endswith(".pub"):
        key = load_public_key_file(path)
    elif os.path.exists(f"{path}.pub"):
        key = load_public_key_file(f"{path}.pub")
    else:
        key = load_private_key(path).public_key
    print(f"{key.fingerprint()} {path} ({key.key_type})")


def _hash(user: str) -> None:
    if ":" in user or not user:
        raise ValueError(f"invalid user name '{user}'")
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {user}: ")
        if password != getpass.getpass("Retype password: "):
            raise ValueError("Passwords do not match.")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password or len(password.encode("utf-8")) > MAX_PASSWORD:
        raise ValueError("empty or too long password")
    print(f"{user}:{hash_password(password)}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.password_user is not None:
            _hash(args.password_user)
        elif args.fingerprint:
            _show_fingerprint(args)
        else:
            _generate(args)
    except (KeyFileError, ValueError, OSError) as exc:
        print(f"hashike-keygen: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
