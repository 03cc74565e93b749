"""A throwaway Dovecot IMAP server for the mail connector's tests.

Debian's `dovecot-imapd`, started with a config of its own in a temporary directory: its own
base_dir (no system service touched), users from a passwd-file, Maildirs under the temporary
directory, plaintext logins allowed (on 127.0.0.1 only), an IMAP listener with STARTTLS and
an IMAPS listener with a self-signed certificate made here, both on free ports. Missing
Dovecot is a failure, not a skip (.ci/run installs it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from imapclient import IMAPClient

from rhythm.stack.ports import free_ports, port_open

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PASSWORD = "imap-test-secret"


@dataclass
class Dovecot:
    home: Path
    users: list[str] = field(default_factory=list)
    port: int = 0
    tls_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def cert(self) -> Path:
        return self.home / "cert.pem"

    def _ids(self) -> tuple[int, int, str, str]:
        """The mail uid/gid and the internal/login users: Dovecot refuses uid 0 for mail."""
        if os.getuid() != 0:
            name = pwd.getpwuid(os.getuid()).pw_name
            return os.getuid(), os.getgid(), name, name
        mail = pwd.getpwnam("dovecot")
        return mail.pw_uid, mail.pw_gid, "dovecot", "dovenull"

    def start(self) -> None:
        assert os.path.exists(DOVECOT), "dovecot is not installed (apt-get install dovecot-imapd)"
        self.home.mkdir(parents=True, exist_ok=True)
        uid, gid, internal, login = self._ids()
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(self.home / "key.pem"), "-out", str(self.cert),
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        self.port, self.tls_port = free_ports(2)
        (self.home / "mail").mkdir(exist_ok=True)
        os.chown(self.home / "mail", uid, gid)
        (self.home / "passwd").write_text(
            "".join(
                f"{u}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{self.home / 'mail' / u}\n"
                for u in self.users
            )
        )
        base = self.home / "run"
        config = f"""
base_dir = {base}
state_dir = {base}/state
log_path = {self.home}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{self.home}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {min(uid, 100)}
mail_location = maildir:~/Maildir
default_internal_user = {internal}
default_login_user = {login}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.home}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.home}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
        (self.home / "dovecot.conf").write_text(config)
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.home / "dovecot.conf")],
            stdout=(self.home / "dovecot.out").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not (port_open("127.0.0.1", self.port) and port_open("127.0.0.1", self.tls_port)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dovecot did not start:\n" + self.log())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def log(self) -> str:
        parts = []
        for name in ("dovecot.out", "dovecot.log"):
            path = self.home / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def client(self, user: str) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=30)
        client.login(user, PASSWORD)
        return client

    def append(self, user: str, mailbox: str, message: bytes, when: object = None) -> None:
        with self.client(user) as client:
            if not client.folder_exists(mailbox):
                client.create_folder(mailbox)
            client.append(mailbox, message, msg_time=when)
