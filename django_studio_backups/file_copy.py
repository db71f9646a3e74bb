"""Copy a file's bytes at the kernel's speed: ``sendfile()``, or reads and writes at offsets
where it cannot copy a file to a file.

Nothing here knows about SQLite or Django: ``engine`` decides what to copy and when.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

COPY_CHUNK = 8 * 1024 * 1024
# The piece of a copy held in memory where sendfile() is not available.
READ_CHUNK = 1024 * 1024

logger = logging.getLogger("django_studio_backups")


def copy_bytes(source_fd: int, destination: Path) -> bool:
    """Copy ``source_fd`` from its start to its size at the call; False if it shrank."""
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        # Up to the size the file had when the copy began: what a writer appends later is
        # not part of the snapshot, and a copy that chased it might never end.
        return _send(source_fd, fd, os.fstat(source_fd).st_size)
    finally:
        os.close(fd)


def _send(source_fd: int, destination_fd: int, length: int) -> bool:
    offset = 0
    while offset < length:
        sent = _send_chunk(source_fd, destination_fd, offset, min(length - offset, COPY_CHUNK))
        if sent == 0:
            return False  # the file shrank
        offset += sent
    return True


# Where sendfile() cannot copy a file to a file (macOS wants a socket; some filesystems and
# sandboxes refuse it), it says so with one of these, and the copy reads and writes instead.
SENDFILE_REFUSALS = {
    errno.EINVAL,
    errno.ENOSYS,
    errno.ENOTSUP,
    errno.EOPNOTSUPP,
    errno.ENOTSOCK,
}
_sendfile_refused = False


def _send_chunk(source_fd: int, destination_fd: int, offset: int, count: int) -> int:
    """Copy up to ``count`` bytes of ``source_fd`` from ``offset`` (its own position is left
    alone, as the snapshot's read transaction needs) to ``destination_fd``'s position."""
    global _sendfile_refused
    sendfile = getattr(os, "sendfile", None)
    if sendfile is not None and not _sendfile_refused:
        try:
            return int(sendfile(destination_fd, source_fd, offset, count))
        except OSError as exc:
            if exc.errno not in SENDFILE_REFUSALS:
                raise
            _sendfile_refused = True
            logger.info("sendfile() cannot copy files here (%s); reading and writing", exc)
    data = os.pread(source_fd, min(count, READ_CHUNK), offset)
    view = memoryview(data)
    while view:
        view = view[os.write(destination_fd, view) :]
    return len(data)
