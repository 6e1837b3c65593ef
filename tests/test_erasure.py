"""The erasure scan's core: it finds a forget set's content by row hash in .npy files and by bytes
anywhere else (inside archives too), never reports a purged row, and says what it could not see."""

import bz2
import gzip
import io
import json
import os
import shutil

import numpy as np
import pytest

from unlearn_ops.data.sources import load_digits
from unlearn_ops.data.store import build_store, row_bytes
from unlearn_ops.erasure import MIN_NEEDLE, ForgetIndex, Location, Sample, scan
from unlearn_ops.utils import sha256_bytes


def sample(sample_id: str, content: bytes) -> Sample:
    return Sample(sample_id, sha256_bytes(content), content)


def image_samples(store, ids):
    return [sample(i, row_bytes(r)) for i, r in zip(ids, store.rows(ids), strict=True)]


def copies(result, location=None):
    """{file name: sorted sample IDs} over the result's locations (or one of them)."""
    out = {}
    for loc in result["locations"]:
        if location in (None, loc["name"]):
            for c in loc["copies"]:
                out.setdefault(os.path.basename(c["path"].split("!")[0].split(" (")[0]), set()).update(c["sample_ids"])
    return {k: sorted(v) for k, v in out.items()}


@pytest.fixture()
def store(tmp_path):
    return build_store(load_digits(), tmp_path / "store" / "digits", max_subject_size=10, rows_per_shard=300)


@pytest.fixture()
def forget(store):
    """A subject whose every image is searchable by bytes, with its content from the store."""
    for subject in sorted(set(store.index.subject_id) - {""}):
        ids = store.subject_ids(subject)
        found = image_samples(store, ids)
        if len(ids) >= 3 and not ForgetIndex(found).unsearchable:
            return found
    raise AssertionError("no fully searchable subject in digits")


def test_purged_store_is_clean_and_its_old_version_is_not(store, forget, tmp_path):
    ids = [s.sample_id for s in forget]
    old = tmp_path / "old-version"
    shutil.copytree(store.root / "payload", old)  # what a DVC cache keeps after the purge
    store.purge(ids)
    result = scan(forget, [Location("store", store.root), Location("history", old)])
    assert not result["passed"] and result["copies"] == len(ids)
    assert copies(result, "store") == {}
    (hit,) = copies(result, "history").values()
    assert hit == sorted(ids)
    assert {c["how"] for loc in result["locations"] for c in loc["copies"]} == {"npy rows"}


def test_zeroed_rows_never_count_even_for_a_blank_sample(store, forget, tmp_path):
    blank = sample("digits/train/999999", bytes(64))  # a forgotten image that was all black
    store.purge([s.sample_id for s in forget])
    result = scan([*forget, blank], [Location("store", store.root)])
    assert result["passed"] and result["copies"] == 0
    assert "blank" in result["unsearchable"]["digits/train/999999"]


def test_bytes_found_at_any_offset_and_inside_archives(forget, tmp_path):
    rng = np.random.default_rng(0)
    noise = lambda n: rng.integers(0, 256, n, dtype=np.uint8).tobytes()  # noqa: E731
    a, b, c = forget[:3]
    blob = noise(1001) + a.content + noise(37) + b.content + noise(5)  # odd offsets: not word-aligned
    d = tmp_path / "var"
    d.mkdir()
    (d / "dump.bin").write_bytes(blob)
    (d / "dump.bin.gz").write_bytes(gzip.compress(blob))
    (d / "dump.bz2").write_bytes(bz2.compress(c.content + noise(100)))
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.frombuffer(c.content, np.uint8).reshape(1, 8, 8))
    (d / "arrays.npz").write_bytes(buf.getvalue())
    result = scan(forget, [Location("var", d)])
    assert copies(result) == {"dump.bin": sorted([a.sample_id, b.sample_id]),
                              "dump.bin.gz": sorted([a.sample_id, b.sample_id]),
                              "dump.bz2": [c.sample_id], "arrays.npz": [c.sample_id]}
    assert result["locations"][0]["skipped"] == []


def test_partial_or_transformed_content_is_not_a_copy(forget, tmp_path):
    a, d = forget[0], tmp_path / "t"
    d.mkdir()
    (d / "half.bin").write_bytes(a.content[: len(a.content) // 2] * 3)
    as_float = np.frombuffer(a.content, np.uint8).astype(np.float32) / 255
    np.save(d / "scaled.npy", as_float.reshape(1, -1))
    changed = bytearray(a.content)
    changed[len(changed) // 2] ^= 1
    (d / "one-pixel-off.bin").write_bytes(bytes(changed))
    result = scan(forget, [Location("t", d)])
    assert result["passed"], result["locations"][0]["copies"]


def test_text_found_as_utf8_and_in_unicode_arrays(tmp_path):
    long_text = "A moving, quietly devastating film about grief — and the recipes that outlive us."
    other = "The sequel nobody asked for, and it shows in every frame of its bloated runtime."
    short = "Meh."
    forget = [sample("rt/train/000001", long_text.encode()), sample("rt/train/000002", short.encode()),
              sample("rt/train/000003", other.encode())]
    (tmp_path / "request.json").write_text(json.dumps({"note": long_text}, ensure_ascii=False))
    np.save(tmp_path / "payload.npy", np.array(["kept text", other, ""], dtype=np.str_))
    (tmp_path / "log.txt").write_text("Meh. Meh. nothing else here")
    result = scan(forget, [Location("data", tmp_path)])
    assert copies(result) == {"request.json": ["rt/train/000001"], "payload.npy": ["rt/train/000003"]}
    assert f"shorter than {MIN_NEEDLE} bytes" == result["unsearchable"]["rt/train/000002"]


def test_unreadable_containers_are_listed_not_dropped(forget, tmp_path):
    tmp_path = tmp_path / "t"
    tmp_path.mkdir()
    (tmp_path / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (tmp_path / "pixels.zst").write_bytes(b"\x28\xb5\x2f\xfd" + forget[0].content)
    os.symlink("/etc/hostname", tmp_path / "link")
    os.mkfifo(tmp_path / "pipe")  # opening it would block the scan forever
    result = scan(forget, [Location("t", tmp_path)])
    reasons = {os.path.basename(s["path"]): s["reason"] for s in result["locations"][0]["skipped"]}
    assert set(reasons) == {"plot.png", "broken.gz", "pixels.zst", "link", "pipe"}
    assert reasons["pipe"] == "not a regular file"
    assert "PNG" in reasons["plot.png"] and "corrupt gzip" in reasons["broken.gz"]
    assert "zstd" in reasons["pixels.zst"] and "symbolic link" in reasons["link"]


def test_hash_only_samples_are_found_in_arrays_and_flagged(store, forget, tmp_path):
    wrong = Sample(forget[0].sample_id, forget[0].sha256, b"not the bytes it was hashed from!")
    hash_only = Sample(forget[1].sample_id, forget[1].sha256, None)
    d = tmp_path / "t"
    d.mkdir()
    np.save(d / "rows.npy", np.stack([np.frombuffer(s.content, np.uint8) for s in forget[:2]]))
    result = scan([wrong, hash_only], [Location("t", d)])
    assert copies(result) == {"rows.npy": sorted([wrong.sample_id, hash_only.sample_id])}
    assert "does not match the stored sha256" in result["unsearchable"][wrong.sample_id]
    assert "hash only" in result["unsearchable"][hash_only.sample_id]


def test_excluded_folders_and_missing_locations(forget, tmp_path):
    d = tmp_path / "data"
    (d / "raw").mkdir(parents=True)
    (d / "raw" / "source.bin").write_bytes(forget[0].content)
    result = scan(forget, [Location("data", d, exclude=(d / "raw",)), Location("gone", tmp_path / "nope")])
    assert result["passed"] and result["locations"][0]["files"] == 0
    assert result["locations"][1]["exists"] is False


def test_many_needles_in_noise_are_all_found(tmp_path):
    """A class deletion's worth of samples placed at random offsets: every one is found, no other."""
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 256, (3000, 784), dtype=np.uint8)
    forget = [sample(f"x/train/{i:06d}", r.tobytes()) for i, r in enumerate(rows)]
    placed = sorted(rng.choice(3000, 700, replace=False).tolist())
    parts = []
    for i in placed:
        parts += [rng.integers(0, 256, int(rng.integers(0, 50)), dtype=np.uint8).tobytes(), rows[i].tobytes()]
    parts.append(rows[placed[0]][:-1].tobytes())  # a truncated copy at the end is not a copy
    (tmp_path / "blob").write_bytes(b"".join(parts))
    result = scan(forget, [Location("t", tmp_path)])
    assert copies(result) == {"blob": sorted(f"x/train/{i:06d}" for i in placed)}


def test_a_twin_of_a_kept_sample_is_named_not_counted(store, forget):
    """Content that is also a sample nobody asked to forget stays (under that sample's ID)."""
    twin = forget[0].sample_id
    result = scan(forget, [Location("store", store.root)], twins={twin: ["digits/test/000001"]})
    (copy,) = result["locations"][0]["copies"]
    assert copy["twin_ids"] == [twin] and twin not in copy["sample_ids"]
    assert result["copies"] == len(forget) - 1 and result["identical_to_retained"] == {twin: ["digits/test/000001"]}


def test_whole_files_are_found_by_hash_wherever_they_are(tmp_path):
    """Deleted weights are searched by their sha256: a copy anywhere fails the scan, a file that
    differs in one byte is not a copy."""
    weights = os.urandom(5000)
    label = "m v1 weights (model.safetensors)"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "copy.safetensors").write_bytes(weights)
    (tmp_path / "a" / "other.bin").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))
    found = scan([], [Location("here", tmp_path)], files={sha256_bytes(weights): label})
    assert not found["passed"] and found["copies"] == 1 and found["files_searched_for"] == [label]
    assert copies(found) == {"copy.safetensors": [label]}
    assert found["locations"][0]["copies"][0]["how"] == "whole file"
    (tmp_path / "a" / "copy.safetensors").unlink()
    assert scan([], [Location("here", tmp_path)], files={sha256_bytes(weights): label})["passed"]
