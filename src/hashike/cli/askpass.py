"""SSH_ASKPASS, as ssh(1) reads passwords, passphrases and questions without
a terminal (readpass.c): scripts and GUIs hand ssh a program that asks.

The program runs with the prompt as its one argument; what it prints up to
the first CR or LF is the answer, and a non-zero exit status means none.
It may run only with a display (DISPLAY or WAYLAND_DISPLAY set), and runs
when there is no terminal. SSH_ASKPASS_REQUIRE changes that: ``never``
never runs it, ``prefer`` runs it even with a terminal (a display still
needed), ``force`` runs it whatever the display and terminal.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

__all__ = ["DEFAULT_ASKPASS", "confirm", "run_askpass", "use_askpass"]

DEFAULT_ASKPASS = "/usr/bin/ssh-askpass"  # Debian's ssh-askpass package


def use_askpass(env: Mapping[str, str], have_tty: bool) -> bool:
    """True when the question goes to the SSH_ASKPASS program, not the terminal."""
    allowed = bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))
    require = env.get("SSH_ASKPASS_REQUIRE", "").lower()
    wanted = not have_tty
    if require == "force":
        wanted = allowed = True
    elif require == "prefer":
        wanted = wanted or allowed
    elif require == "never":
        allowed = False
    return wanted and allowed


def run_askpass(env: Mapping[str, str], prompt: str) -> str | None:
    """The program's answer, or None when it fails or cannot run."""
    program = env.get("SSH_ASKPASS") or DEFAULT_ASKPASS
    try:
        result = subprocess.run([program, prompt], stdout=subprocess.PIPE, check=False, env=dict(env))
    except OSError:
        return None
    if result.returncode != 0:
        return None
    answer = result.stdout.decode("utf-8", "replace")
    for end in "\r\n":
        answer = answer.partition(end)[0]
    return answer


def confirm(env: Mapping[str, str], prompt: str) -> bool:
    """A yes/no question through SSH_ASKPASS, as ssh's ControlMaster ask puts
    it: SSH_ASKPASS_PROMPT=confirm tells the program to offer yes and no; an
    empty answer or "yes" (any case) is yes, anything else, a failure or no
    program to ask (no display) is no. Blocking: run it in a thread."""
    if not use_askpass(env, have_tty=False):
        return False
    answer = run_askpass({**env, "SSH_ASKPASS_PROMPT": "confirm"}, prompt)
    return answer is not None and answer.strip().lower() in ("", "yes")
