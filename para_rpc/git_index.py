"""The gitlinks (submodule entries, mode 160000) an index file holds, read without a git
process: every cancel and integration asks before the worktree goes, and on a worktree with
no submodule the answer is one read of the file. Anything this reader does not know exactly
as git does (a split or sparse index, an index without its checksum, a SHA-256 repository, a
version it does not know, a file that is not a plain file) raises LookupError: then
`git ls-files --stage` answers, as it always did."""

from __future__ import annotations

import hashlib
import os
import stat
import struct

# Mode 0o160000 as an entry stores it: 4 bytes, big-endian. Absent from the whole file, no
# entry can be a gitlink, and the entries need not be walked.
_GITLINK_MODE = struct.pack(">I", 0o160000)
_LIMIT = 32 << 20  # (an index of some 300,000 files; past it, git reads it, in its own process)


def read(path: str) -> bytes:
    """The index file at `path` (`plain_file`); LookupError when it is not one."""
    try:
        return plain_file(path)
    except OSError as e:
        raise LookupError(str(e)) from None


def plain_file(path: str, limit: int = _LIMIT) -> bytes:
    """The bytes of the regular file at `path`, not through a symbolic link, not waiting for
    a writer, not past `limit` (OSError otherwise). What an agent can write is read so (its
    git dir's index; for git.py, ref and object files): a FIFO there must not block the
    sidecar, and with it every client."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise OSError(f"{path}: not a regular file of at most {limit} bytes")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def gitlinks(data: bytes) -> set[str]:
    """The paths of the index's gitlink entries, as `git ls-files --stage` names them."""
    if len(data) < 32 or data[:4] != b"DIRC":
        raise LookupError("not an index")
    version, count = struct.unpack_from(">II", data, 4)
    if version not in (2, 3, 4):
        raise LookupError(f"index version {version}")
    end = len(data) - 20
    # The checksum also tells a SHA-1 index from a SHA-256 one (whose entries are longer);
    # all zeros is `index.skipHash` (feature.manyFiles), which says nothing about either.
    if hashlib.sha1(memoryview(data)[:end]).digest() != data[end:]:
        raise LookupError("no SHA-1 checksum")
    if _GITLINK_MODE not in data and b"link" not in data and b"sdir" not in data:
        return set()  # (no gitlink entry, no split or sparse index extension)
    found: set[str] = set()
    pos, prev = 12, b""
    try:
        for _ in range(count):
            mode = struct.unpack_from(">I", data, pos + 24)[0]
            flags = struct.unpack_from(">H", data, pos + 60)[0]
            p = pos + 62
            if flags & 0x4000:  # extended flags (intent-to-add, skip-worktree): version 3 and up
                if version < 3:
                    raise LookupError("extended flags in a version 2 index")
                p += 2
            if version == 4:  # the name: how much of the previous name to drop, then the rest
                strip, p = _varint(data, p)
                if strip > len(prev):
                    raise LookupError("bad name compression")
                nul = data.index(b"\0", p)
                name = prev[:len(prev) - strip] + data[p:nul]
                pos = nul + 1
            else:  # the name, then 1 to 8 NULs to a multiple of 8 bytes
                nul = data.index(b"\0", p)
                name = data[p:nul]
                pos += (nul - pos + 8) & ~7
            if (flags & 0xFFF) not in (0xFFF, len(name)) or pos > end:
                raise LookupError("an entry is not what its flags say")
            if mode == 0o160000:
                found.add(name.decode("utf-8", "replace"))
            prev = name
        while pos + 8 <= end:  # extensions: a split index keeps entries in another file, a
            sig, size = data[pos:pos + 4], struct.unpack_from(">I", data, pos + 4)[0]
            if sig in (b"link", b"sdir"):  # sparse one keeps directories in place of files
                raise LookupError(f"the {sig.decode()} extension")
            pos += 8 + size
    except (struct.error, ValueError, IndexError):
        raise LookupError("a truncated index") from None
    if pos != end:
        raise LookupError("the extensions do not end at the checksum")
    return found


def _varint(data: bytes, p: int) -> tuple[int, int]:
    """Git's offset encoding (version 4 names): 7 bits a byte, each continuation adding one."""
    c = data[p]
    p += 1
    value = c & 0x7F
    while c & 0x80:
        c = data[p]
        p += 1
        value = ((value + 1) << 7) | (c & 0x7F)
    return value, p
