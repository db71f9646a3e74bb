"""Real servers on 127.0.0.1 for the notification tests: SMTP (aiosmtpd), a heartbeat
monitor (HTTP), and servers that accept a connection and never answer."""

from __future__ import annotations

import contextlib
import email
import email.policy
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from .offsite_servers import free_port

ADMIN_EMAIL = "owner@studio.test"


class SMTPServer:
    """aiosmtpd on a port of its own; ``messages`` are the mails it accepted."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def env(self) -> dict[str, str]:
        """What tests.settings reads to mail ADMINS through this server."""
        return {"STUDIO_TEST_SMTP_PORT": str(self.port)}


@dataclass
class Ping:
    method: str
    path: str
    body: str


@dataclass
class Monitor:
    """A heartbeat monitor in the healthchecks.io style: it records every request."""

    pings: list[Ping] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ping/studio-backups"


@contextmanager
def running_monitor() -> Iterator[Monitor]:
    monitor = Monitor()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            monitor.pings.append(Ping(self.command, self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = do_HEAD = _record

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    monitor.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield monitor
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def raw_server(serve: Callable[[socket.socket, threading.Event], None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that runs ``serve(connection, closing)`` in a thread for
    each connection; its port. On leaving, ``closing`` is set and every connection closed."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port: int = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)
            threading.Thread(target=serve, args=(connection, closing), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        closing.set()
        listener.close()
        for connection in accepted:
            connection.close()
        thread.join(5)


def silent_server(greeting: bytes = b"") -> contextlib.AbstractContextManager[int]:
    """A server that accepts connections, says ``greeting`` (an SSH banner, say), then
    never answers again: a hung server."""

    def serve(connection: socket.socket, closing: threading.Event) -> None:
        if greeting:
            connection.sendall(greeting)

    return raw_server(serve)


def trickling_server() -> contextlib.AbstractContextManager[int]:
    """An HTTP server that answers one byte every two seconds, for ever: no socket timeout
    ever fires."""

    def serve(connection: socket.socket, closing: threading.Event) -> None:
        try:
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not closing.wait(2):
                connection.sendall(b".")
        except OSError:
            return

    return raw_server(serve)
