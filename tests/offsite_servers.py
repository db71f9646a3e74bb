"""Real servers on 127.0.0.1 for the off-site tests: OpenSSH's sshd (SFTP) and moto (S3)."""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"
MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
BUCKET = "studio-offsite"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces; the fields after its closing parenthesis do not.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


class SSHServer:
    """sshd with its own host key, authorized key and config; key authentication only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root = directory / "remote"
        self.root.mkdir(parents=True)
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = directory / "host_ed25519"
        self.client_key = directory / "client_ed25519"
        for key in (self.host_key, self.client_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        (directory / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        host_public = " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_public}\n")
        self.config = directory / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {directory / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel ERROR\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if os.geteuid() == 0:
            # sshd's privilege separation directory; Debian creates it only when it runs
            # the system's own sshd.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        # The server keeps its own copy of the log's descriptor.
        with open(self.directory / "sshd.log", "ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config)], stdout=subprocess.DEVNULL, stderr=log
            )
        wait_for_port(self.port, self.process, "sshd")

    def kill(self) -> None:
        """SIGKILL the server and every session it runs, as a crash or power cut would."""
        assert self.process is not None
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def storage(self) -> dict[str, Any]:
        return {
            "BACKEND": "storages.backends.sftpstorage.SFTPStorage",
            "OPTIONS": {
                "host": "127.0.0.1",
                "params": {
                    "port": self.port,
                    "username": self.user,
                    "key_filename": str(self.client_key),
                    "look_for_keys": False,
                    "allow_agent": False,
                    "timeout": 10,
                    "banner_timeout": 10,
                    "auth_timeout": 10,
                },
                "root_path": str(self.root),
                "known_host_file": str(self.known_hosts),
            },
        }


class S3Server:
    """moto's standalone S3 server. It keeps objects in memory: a restart loses them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    def start(self) -> None:
        with open(self.directory / "moto.log", "ab") as log:
            self.process = subprocess.Popen(
                [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_for_port(self.port, self.process, "moto_server")
        self.client().create_bucket(Bucket=BUCKET)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def client(self) -> Any:
        import boto3

        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name="us-east-1",
            )
        return self._client

    def keys(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=BUCKET)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def get(self, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return body

    def uploads_in_progress(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (
            self.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        )
        return found

    def storage(self) -> dict[str, Any]:
        return {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": self.endpoint,
                "access_key": "testing",
                "secret_key": "testing",
                "region_name": "us-east-1",
                "location": "studio",
            },
        }
