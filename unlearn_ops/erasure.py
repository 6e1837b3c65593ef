"""The erasure scan: search files for copies of a forget set's content.

A forget set is known by its sample IDs, the stored sha256 of each sample and, where the caller
could re-derive them from the immutable upstream source, each sample's raw bytes (an image row's
bytes; a text's UTF-8). Every file under the given locations is searched two ways:

- **.npy arrays** (recognised by their magic, not their name: DVC cache objects have none) are
  mapped read-only (never unpickled) and every non-empty row of a byte or text array is hashed and
  compared with the forget set's hashes. A zeroed / emptied row (a purge) is never hashed, so it is
  never reported, even when a forgotten sample's own content was blank (such a sample is listed as
  not searchable instead).
- **every other file** (and arrays whose rows are not samples) is searched for each sample's raw
  bytes as a substring, at any offset. One vectorised pass per file: the file is read as aligned
  8-byte words; every sample contributes a few "anchor" words at each of the 8 offsets modulo 8
  (only words with ≥ MIN_DISTINCT different bytes, so zero runs and flat backgrounds match
  nothing); a word that equals an anchor is verified by comparing the whole sample in place.
  An occurrence of a sample of ≥ MIN_NEEDLE bytes always covers an aligned word at its anchor's
  residue, so nothing is missed; a sample whose content cannot give an anchor at every residue
  (nearly constant, or shorter than MIN_NEEDLE) is reported as not searchable by bytes.

Whole files can be searched for too (`files`: sha256 -> label), e.g. the weights of a model version
deleted because it was trained on forgotten data: every file's sha256 is compared with them.

gzip / bz2 / xz files and zip archives (`.npz` included) are searched decompressed, up to
MAX_INFLATE bytes per member; anything not searched (an image codec, zstd, a larger member, a
corrupt archive, a symbolic link, an unreadable file) is listed with its reason, never dropped.
Limits (see docs/erasure.md): content transformed before it was written (scaled floats, resized,
re-encoded, PNG) is not recognised.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import mmap
import os
import stat
import time
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIN_NEEDLE = 16          # bytes: a shorter text (or row) is too common to call a match a copy
MIN_DISTINCT = 4         # distinct byte values an anchor word needs (zeros and flat runs are everywhere)
ANCHORS_PER_RESIDUE = 2  # anchors per offset class: a spare in case one is common in unrelated data
MAX_INFLATE = 1 << 30    # decompressed bytes searched per archive member at most
MAX_DEPTH = 2            # archives inside archives
CHUNK_WORDS = 1 << 23    # 64 MiB of a file per vectorised step
_MULT = np.uint64(0x9E3779B97F4A7C15)
_TABLE_BITS = 22

NPY_MAGIC = b"\x93NUMPY"
_CODECS = {b"\x89PNG": "PNG image (compressed pixels)", b"\xff\xd8\xff": "JPEG image (lossy pixels)",
           b"GIF8": "GIF image (compressed pixels)", b"RIFF": "RIFF/WebP container (compressed)",
           b"\x28\xb5\x2f\xfd": "zstd stream (no decompressor in the standard library)"}


@dataclass(frozen=True)
class Sample:
    sample_id: str
    sha256: str
    content: bytes | None = None  # raw row bytes / UTF-8 text, checked against sha256; None: hash only


@dataclass(frozen=True)
class Location:
    name: str
    path: Path
    exclude: tuple[Path, ...] = ()  # folders inside `path` searched elsewhere or out of scope
    # a running server's files (databases): read, not memory-mapped, because a mapped file that the
    # server truncates meanwhile (PostgreSQL's vacuum does) kills the reading process with SIGBUS
    live: bool = False


@dataclass
class Copy:
    path: str         # the file, or `file!member` / `file (gzip)` inside an archive
    sample_ids: list[str]
    how: str          # "npy rows" | "bytes" | "whole file"
    file: str = ""    # the file on disk that holds it


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class LocationReport:
    name: str
    path: str
    exists: bool = True
    files: int = 0
    bytes: int = 0
    copies: list[Copy] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_copies(self) -> int:
        """(file, sample) pairs: the same sample in two files is two copies."""
        return sum(len(c.sample_ids) for c in self.copies)


class ForgetIndex:
    """What the scan looks for: hashes of every sample, anchors of every byte-searchable one."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self.samples = list(samples)
        self.unsearchable: dict[str, str] = {}  # sample_id -> why the byte search cannot see it
        self.by_hash: dict[str, list[str]] = {}
        contents: list[bytes | None] = []
        for s in self.samples:
            content = s.content
            if content is not None and hashlib.sha256(content).hexdigest() != s.sha256:
                self.unsearchable[s.sample_id] = "re-derived content does not match the stored sha256 (hash only)"
                content = None
            if content is not None and not content.strip(b"\0"):
                self.unsearchable[s.sample_id] = "content is blank: indistinguishable from a purged row"
                contents.append(None)
                continue
            self.by_hash.setdefault(s.sha256, []).append(s.sample_id)
            contents.append(content)
        self.contents = contents
        self._build_anchors()

    def _build_anchors(self) -> None:
        keys, owners, offsets = [], [], []
        by_length: dict[int, list[int]] = {}
        for j, (s, c) in enumerate(zip(self.samples, self.contents, strict=True)):
            if c is None:
                self.unsearchable.setdefault(s.sample_id, "no raw content (hash only)")
            elif len(c) < MIN_NEEDLE:
                self.unsearchable[s.sample_id] = f"shorter than {MIN_NEEDLE} bytes"
            else:
                by_length.setdefault(len(c), []).append(j)
        for group in by_length.values():  # samples of one length are done together, vectorised
            rows = np.stack([np.frombuffer(self.contents[j], np.uint8) for j in group])
            chosen = _anchors(rows)
            words = np.lib.stride_tricks.sliding_window_view(rows, 8, axis=1)
            for g, j in enumerate(group):
                if chosen[g] is None:
                    self.unsearchable[self.samples[j].sample_id] = "too uniform for a byte search (hash only)"
                    continue
                keys.append(np.ascontiguousarray(words[g, chosen[g]]).view("<u8").ravel())
                owners.append(np.full(len(chosen[g]), j))
                offsets.append(chosen[g])
        keys_all = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        order = np.argsort(keys_all, kind="stable")
        self.keys = keys_all.astype(np.uint64)[order]
        self.owner = (np.concatenate(owners) if owners else np.zeros(0, np.int64))[order]
        self.offset = (np.concatenate(offsets) if offsets else np.zeros(0, np.int64))[order]
        self.table = np.zeros(1 << _TABLE_BITS, dtype=bool)
        self.table[_bucket(self.keys)] = True

    @property
    def byte_searchable(self) -> int:
        return len({int(j) for j in self.owner})


def _bucket(words: np.ndarray) -> np.ndarray:
    return np.multiply(words, _MULT, dtype=np.uint64) >> np.uint64(64 - _TABLE_BITS)


def _anchors(rows: np.ndarray) -> list[np.ndarray | None]:
    """Per row of an (n, L) byte array: offsets of ANCHORS_PER_RESIDUE informative 8-byte words at
    each residue mod 8 (the most varied first), or None when some residue has none."""
    win = np.lib.stride_tricks.sliding_window_view(rows, 8, axis=1)  # (n, L-7, 8)
    distinct = np.ones(win.shape[:2], dtype=np.int8)
    for i in range(1, 8):  # byte i adds a value unless it repeats one of bytes 0..i-1
        repeat = np.zeros(win.shape[:2], dtype=bool)
        for j in range(i):
            repeat |= win[..., i] == win[..., j]
        distinct += ~repeat
    picks, ok = [], np.ones(len(rows), dtype=bool)
    for r in range(8):
        offs = np.arange(r, win.shape[1], 8)
        d = distinct[:, offs]
        best = np.argsort(-d, axis=1, kind="stable")[:, :ANCHORS_PER_RESIDUE]
        ok &= np.take_along_axis(d, best[:, :1], axis=1)[:, 0] >= MIN_DISTINCT
        good = np.take_along_axis(d, best, axis=1) >= MIN_DISTINCT
        picks.append(np.where(good, offs[best], -1))
    chosen = np.concatenate(picks, axis=1)
    return [c[c >= 0] if fine else None for c, fine in zip(chosen, ok, strict=True)]


# ------------------------------------------------------------------ one buffer
def _find_bytes(buf: Any, index: ForgetIndex) -> set[int]:
    """Indices of samples whose content occurs anywhere in `buf` (bytes or mmap)."""
    found: set[int] = set()
    if not len(index.keys) or len(buf) < MIN_NEEDLE:
        return found
    n = len(buf) // 8
    words = np.frombuffer(buf, "<u8", count=n)
    zero_is_candidate = bool(index.table[0])
    for start in range(0, n, CHUNK_WORDS):
        w = words[start:start + CHUNK_WORDS]
        cand = np.flatnonzero(index.table[_bucket(w)])
        if zero_is_candidate and len(cand):
            cand = cand[w[cand] != 0]
        if not len(cand):
            continue
        cw = w[cand]
        lo = np.searchsorted(index.keys, cw, "left")
        hi = np.searchsorted(index.keys, cw, "right")
        for k, a, b in zip((start + cand[hi > lo]).tolist(), lo[hi > lo].tolist(), hi[hi > lo].tolist(), strict=True):
            for e in range(a, b):
                j = int(index.owner[e])
                if j in found:
                    continue
                content = index.contents[j]
                o = 8 * k - int(index.offset[e])
                if o >= 0 and o + len(content) <= len(buf) and buf[o:o + len(content)] == content:
                    found.add(j)
    return found


def _npy_array(buf: Any) -> np.ndarray | None:
    """A read-only view of the .npy in `buf` (no copy, no pickle), or None when it holds objects."""
    head = io.BytesIO(buf[:1 << 16])
    version = np.lib.format.read_magic(head)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f".npy format version {version} not supported")
    with warnings.catch_warnings():  # any file is scanned: numpy warns about Python-2-era headers, harmless here
        warnings.simplefilter("ignore", UserWarning)
        shape, fortran, dtype = readers[version](head)
    if dtype.hasobject:
        return None
    count = int(np.prod(shape)) if shape else 1
    arr = np.frombuffer(buf, dtype, count=count, offset=head.tell())
    return arr.reshape(shape, order="F" if fortran else "C")


def _hash_rows(arr: np.ndarray, index: ForgetIndex) -> set[str] | None:
    """Sample IDs whose hash equals a non-empty row's; None when the rows are not samples."""
    if arr.ndim == 0 or not len(arr) or not index.by_hash:
        return None
    hits: set[str] = set()
    if arr.dtype.kind == "U":
        for v in arr.reshape(-1).tolist():
            if v:
                hits.update(index.by_hash.get(hashlib.sha256(v.encode("utf-8")).hexdigest(), ()))
        return hits
    if arr.dtype.itemsize != 1 or arr.dtype.kind not in "uib" or arr.ndim < 2:
        return None
    rows = np.ascontiguousarray(arr.reshape(len(arr), -1))
    for i in np.flatnonzero(rows.any(axis=1)).tolist():
        hits.update(index.by_hash.get(hashlib.sha256(rows[i]).hexdigest(), ()))
    return hits


def _row_sizes(index: ForgetIndex) -> set[int]:
    return {len(c) for c in index.contents if c is not None}


class _MapReader(io.RawIOBase):
    """A seekable file over a memory map (zipfile needs `seekable`, which mmap lacks), without a copy."""

    def __init__(self, buf: Any) -> None:
        self.buf, self.pos = buf, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: len(self.buf)}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, b: Any) -> int:
        data = self.buf[self.pos:self.pos + len(b)]
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _decompress(buf: Any, kind: str) -> Iterable[tuple[str, bytes | None, str | None]]:
    """(member name, data, reason when not searched) for each member of a compressed container."""
    stream = io.BufferedReader(_MapReader(buf))
    if kind == "zip":
        with zipfile.ZipFile(stream) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                if info.file_size > MAX_INFLATE:
                    yield info.filename, None, f"archive member larger than {MAX_INFLATE} bytes"
                    continue
                try:
                    yield info.filename, zf.read(info), None
                except (RuntimeError, zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as e:
                    yield info.filename, None, f"unreadable archive member ({e})"
        return
    opened = gzip.GzipFile(fileobj=stream) if kind == "gzip" else {"bz2": bz2.BZ2File, "xz": lzma.LZMAFile}[kind](stream)
    with opened as f:
        data = f.read(MAX_INFLATE + 1)
    if len(data) > MAX_INFLATE:
        yield kind, None, f"decompresses to more than {MAX_INFLATE} bytes"
    else:
        yield kind, data, None


def _sniff(buf: Any) -> str | None:
    head = bytes(buf[:8])
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    return next((reason for magic, reason in _CODECS.items() if head.startswith(magic)), None)


def scan_buffer(buf: Any, label: str, index: ForgetIndex, depth: int = 0) -> tuple[list[Copy], list[Skipped], int]:
    """Copies in one file's bytes (or an archive member's); returns copies, skipped, bytes searched."""
    kind = _sniff(buf)
    if kind in ("gzip", "bz2", "xz", "zip"):
        if depth >= MAX_DEPTH:
            return [], [Skipped(label, f"{kind} nested deeper than {MAX_DEPTH} archives")], 0
        copies, skipped, total = [], [], 0
        try:
            for member, data, reason in _decompress(buf, kind):
                name = f"{label}!{member}" if kind == "zip" else f"{label} ({kind})"
                if data is None:
                    skipped.append(Skipped(name, str(reason)))
                    continue
                c, s, n = scan_buffer(data, name, index, depth + 1)
                copies += c
                skipped += s
                total += n
        except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError, ValueError) as e:
            skipped.append(Skipped(label, f"corrupt {kind} ({e})"))
        return copies, skipped, total
    if kind is not None and kind != "npy":
        return [], [Skipped(label, kind)], 0
    copies: list[Copy] = []  # at most one per (file, how)
    if kind == "npy":
        try:
            arr = _npy_array(buf)
        except ValueError:  # a malformed header: what follows is still searched as bytes
            arr = None
        hits = _hash_rows(arr, index) if arr is not None else None
        if hits:
            copies.append(Copy(label, sorted(hits), "npy rows"))
        # rows that are whole samples were compared by hash; byte-search only what is laid out otherwise
        whole = arr is not None and len(buf) - arr.nbytes < 1 << 16  # nothing appended after the array
        if whole and hits is not None and (arr.dtype.kind == "U" or _row_sizes(index) <= {arr[0].nbytes}):
            return copies, [], len(buf)
    seen = {i for c in copies for i in c.sample_ids}
    found = sorted({index.samples[j].sample_id for j in _find_bytes(buf, index)} - seen)
    if found:
        copies.append(Copy(label, found, "bytes"))
    return copies, [], len(buf)


# ------------------------------------------------------------------ locations
def _files(location: Location, report: LocationReport) -> Iterable[Path]:
    root = Path(location.path)
    if root.is_file() or root.is_symlink():
        yield root
        return
    excluded = {Path(p).absolute() for p in location.exclude} | {Path(p).resolve() for p in location.exclude}
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        kept = []
        for d in sorted(dirs):
            sub = here / d
            if sub.absolute() in excluded or sub.resolve() in excluded:
                continue
            if sub.is_symlink():
                report.skipped.append(Skipped(str(sub), f"symbolic link to {os.readlink(sub)} (not followed)"))
            else:
                kept.append(d)
        dirs[:] = kept
        for f in sorted(files):
            yield here / f


def scan_location(location: Location, index: ForgetIndex, files: Mapping[str, str] | None = None) -> LocationReport:
    t0 = time.perf_counter()
    report = LocationReport(location.name, str(location.path))
    if not Path(location.path).exists() and not Path(location.path).is_symlink():
        report.exists = False
        return report
    for path in _files(location, report):
        if path.is_symlink():
            report.skipped.append(Skipped(str(path), f"symbolic link to {os.readlink(path)} (not followed)"))
            continue
        try:
            if not stat.S_ISREG(path.lstat().st_mode):  # a FIFO or socket would block or fail the read
                report.skipped.append(Skipped(str(path), "not a regular file"))
                continue
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    report.files += 1
                    continue
                buf = f.read() if location.live else mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                try:
                    copies, skipped, n = scan_buffer(buf, str(path), index)
                    label = files.get(hashlib.sha256(buf).hexdigest()) if files else None
                    if label is not None:
                        copies.append(Copy(str(path), [label], "whole file"))
                finally:
                    if isinstance(buf, mmap.mmap):
                        with contextlib.suppress(BufferError):  # a view still alive: the map closes when it goes
                            buf.close()
        except OSError as e:
            report.skipped.append(Skipped(str(path), f"unreadable ({e.strerror or e})"))
            continue
        report.files += 1
        report.bytes += n
        report.copies += [Copy(c.path, c.sample_ids, c.how, str(path)) for c in copies]
        report.skipped += skipped
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


def scan(samples: Sequence[Sample], locations: Sequence[Location],
         twins: dict[str, list[str]] | None = None, files: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Search every location for every sample, and for every whole file of `files` (sha256 -> label);
    the result is plain data (JSON-ready).

    `twins` names forgotten samples whose content is byte-identical to samples that were not
    forgotten (sample_id -> their IDs): that content legitimately stays, so their copies are
    reported apart (`twin_ids` of each copy) and not counted."""
    twins = twins or {}
    index = ForgetIndex(samples)
    reports = [scan_location(loc, index, files) for loc in locations]
    locs = []
    for r in reports:
        loc = asdict(r)
        for c in loc["copies"]:
            c["twin_ids"] = [i for i in c["sample_ids"] if i in twins]
            c["sample_ids"] = [i for i in c["sample_ids"] if i not in twins]
        loc["copies"] = [c for c in loc["copies"] if c["sample_ids"] or c["twin_ids"]]
        loc["n_copies"] = sum(len(c["sample_ids"]) for c in loc["copies"])
        locs.append(loc)
    copies = sum(loc["n_copies"] for loc in locs)
    return {"samples": len(index.samples), "files_searched_for": sorted((files or {}).values()),
            "byte_searchable": index.byte_searchable,
            "unsearchable": dict(sorted(index.unsearchable.items())),
            "identical_to_retained": {k: sorted(v) for k, v in sorted(twins.items())},
            "locations": locs, "copies": copies, "expected": 0, "passed": copies == 0}
