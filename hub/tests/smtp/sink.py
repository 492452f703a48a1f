#!/usr/bin/env python3
"""A local SMTP server for the hub's e-mail alert tests (PyPI aiosmtpd): STARTTLS required
before AUTH, one user, every message written to OUT_DIR as NNN.eml. Prints "ready PORT".

usage: sink.py CERT KEY OUT_DIR USER PASSWORD
"""
import socket
import ssl
import sys
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

cert, key, out, user, password = sys.argv[1:6]
out = Path(out)
out.mkdir(parents=True, exist_ok=True)
lock = threading.Lock()
count = 0


class Handler:
    async def handle_DATA(self, server, session, envelope):
        global count
        with lock:
            count += 1
            n = count
        head = "X-Envelope-To: " + ",".join(envelope.rcpt_tos) + "\r\n"
        head += "X-Tls: " + ("yes" if session.ssl else "no") + "\r\n"
        head += "X-Auth: " + str(session.authenticated) + "\r\n"
        (out / f"{n:03}.eml").write_bytes(head.encode() + envelope.original_content)
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
    return AuthResult(success=ok)


with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=port,
    tls_context=ctx,
    require_starttls=True,
    authenticator=authenticate,
    auth_require_tls=True,
)
c.start()
print(f"ready {port}", flush=True)
try:
    threading.Event().wait()
except KeyboardInterrupt:
    pass
finally:
    c.stop()
