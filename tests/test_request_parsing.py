"""Request documents are read within IntakeLimits: for every limit, the input that breaks it is
rejected with the limit named, and the input just under it passes."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from unlearn_ops.request_parsing import IntakeLimits, RawDocument, RequestError, kept_text, parse_document
from unlearn_ops.requests import parse_request

L = IntakeLimits()
GOOD = {"request_id": "r-1", "model": "digits-classifier", "kind": "class", "class_label": 1}


def rejects(document, reason: str, limits: IntakeLimits = L) -> None:
    with pytest.raises(RequestError) as e:
        parse_request(document, limits)
    assert reason in str(e.value), str(e.value)


def nested_json(levels: int) -> str:
    return json.dumps({**GOOD, "reason": "x"})[:-1] + ', "extra": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def test_the_issues_document_nested_thousands_of_levels_is_rejected_without_recursion():
    doc = '{"request_id": "deep", "x": ' + "[" * 15_000 + "]" * 15_000 + "}"
    assert 29_000 < len(doc) < 31_000
    rejects(doc, f"nested deeper than {L.max_depth} levels")
    rejects(doc.encode(), f"nested deeper than {L.max_depth} levels")
    # the same depth as data (a flow parameter) is walked iteratively
    data: list = []
    for _ in range(5000):
        data = [data]
    rejects({"x": data}, "nested deeper")


@pytest.mark.parametrize("make", [
    lambda d: "[" * d + "]" * d,                                      # JSON
    lambda d: "a: " + "[" * (d - 1) + "1" + "]" * (d - 1),            # YAML flow
    lambda d: "".join("  " * i + "a:\n" for i in range(d - 1)) + "  " * (d - 1) + "b: 1\n",  # YAML block
], ids=["json", "yaml-flow", "yaml-block"])
def test_depth_limit(make):
    parse_document(make(L.max_depth), L)
    with pytest.raises(RequestError, match=f"nested deeper than {L.max_depth} levels"):
        parse_document(make(L.max_depth + 1), L)


def test_depth_limit_on_data_given_as_a_parameter():
    def nest(d):
        value: dict = {"a": 1}
        for _ in range(d - 1):
            value = {"a": value}
        return value
    parse_document(nest(L.max_depth), L)
    with pytest.raises(RequestError, match="nested deeper"):
        parse_document(nest(L.max_depth + 1), L)


def test_size_limit():
    body = json.dumps(GOOD)
    parse_request(body + " " * (L.max_bytes - len(body)), L)
    rejects(body + " " * (L.max_bytes - len(body) + 1), f"document of {L.max_bytes + 1} bytes (limit {L.max_bytes})")
    rejects({**GOOD, "a": ["x" * 30] * 9000}, "bytes (limit")  # data given as a parameter: its JSON size


def test_a_huge_file_is_hashed_whole_but_read_bounded(tmp_path):
    path = tmp_path / "huge.json"
    content = b"[" * (3 * L.max_bytes)
    path.write_bytes(content)
    raw = RawDocument.read(path, L)
    assert raw.size == len(content) and raw.sha256 == hashlib.sha256(content).hexdigest()
    assert len(raw.data) == L.max_bytes + 1
    rejects(raw, f"document of {len(content)} bytes")


def test_a_fifo_is_not_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(RequestError, match="not a regular file"):
        RawDocument.read(tmp_path / "pipe.json", L)


def test_string_limit():
    parse_request({**GOOD, "reason": "x" * L.max_string}, L)
    rejects({**GOOD, "reason": "x" * (L.max_string + 1)}, f"a string of {L.max_string + 1} characters")


def test_key_length_limit():
    parse_document({"k" * L.max_key_chars: 1}, L)
    rejects({"k" * (L.max_key_chars + 1): 1}, f"a key of {L.max_key_chars + 1} characters")


def test_key_count_limit():
    parse_document(json.dumps({f"k{i}": i for i in range(L.max_keys)}), L)
    rejects(json.dumps({f"k{i}": i for i in range(L.max_keys + 1)}), f"an object with {L.max_keys + 1} keys")


def test_list_length_limit():
    ids = [f"digits/train/{i:06d}" for i in range(L.max_items + 1)]
    req = {"model": "digits-classifier", "kind": "samples"}
    assert len(parse_request(json.dumps({**req, "sample_ids": ids[:-1]}), L).sample_ids) == L.max_items
    rejects(json.dumps({**req, "sample_ids": ids}), f"a list of {L.max_items + 1} items")


def test_value_count_limit_counts_every_value():
    n = L.max_nodes - 3  # the object and its two lists are values too
    parse_document(json.dumps({"a": [0] * (n // 2), "b": [0] * (n - n // 2)}), L)
    rejects(json.dumps({"a": [0] * (n // 2), "b": [0] * (n - n // 2 + 1)}), f"more than {L.max_nodes} values")


def test_yaml_aliases_are_bounded_and_billion_laughs_is_rejected():
    anchor = "base: &b [1, 2]\n"
    parse_document(anchor + "".join(f"k{i}: *b\n" for i in range(L.max_aliases)), L)
    rejects(anchor + "".join(f"k{i}: *b\n" for i in range(L.max_aliases + 1)), f"more than {L.max_aliases} YAML aliases")
    laughs = "a: &a [" + ",".join(["lol"] * 9) + "]\n" + "".join(
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    rejects(laughs, "YAML aliases")
    # few aliases, each expanding a big list: the value count sees every expansion
    wide = "a: &a [" + ",".join(["1"] * 2000) + "]\n" + "".join(f"k{i}: *a\n" for i in range(L.max_aliases))
    rejects(wide, f"more than {L.max_nodes} values")


def test_recursive_yaml_aliases_are_rejected():
    rejects("a: &a [*a]", "refers to a node that contains it")
    rejects("a: &a {<<: *a}", "refers to a node that contains it")


def test_merge_keys_work_and_explicit_duplicates_do_not():
    data = parse_document("d: &d {x: 1, y: 1}\nitem: {<<: *d, y: 2}\n", L)
    assert data["item"] == {"x": 1, "y": 2}
    rejects("item: {<<: {x: 1}, y: 2, y: 3}", "duplicate key 'y'")


@pytest.mark.parametrize("doc", ["!!python/object/apply:os.system ['true']", "a: !!binary aGVsbG8=", "a: !custom 1",
                                 "a: !!str 1", "a: !!set {x}", "!!map {a: 1}"])
def test_yaml_tags_are_rejected(doc):
    rejects(doc, "YAML tag")


@pytest.mark.parametrize("doc", ['{"model": "a", "model": "b"}', "model: a\nmodel: b\n", "model: a\n'model': b\n"])
def test_duplicate_keys_are_rejected(doc):
    rejects(doc, "duplicate key 'model'")


def test_number_literal_length_limit():
    assert parse_document('{"a": 1.' + "0" * (L.max_number_chars - 2) + "}", L) == {"a": 1.0}
    assert parse_document("a: 1." + "0" * (L.max_number_chars - 2), L) == {"a": 1.0}
    rejects('{"a": 1.' + "0" * (L.max_number_chars - 1) + "}", f"number literal of {L.max_number_chars + 1} characters")
    rejects("a: 1." + "0" * (L.max_number_chars - 1), f"number literal of {L.max_number_chars + 1} characters")
    rejects('{"a": ' + "9" * 5000 + "}", "number literal of 5000 characters")  # Python's own limit is 4300 digits


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_number_range(fmt):
    def doc(v):  # (a YAML 1.1 float needs a dot: `1e+300` would read as a string)
        return json.dumps({"a": v}) if fmt == "json" else f"a: {v:.1e}" if isinstance(v, float) else f"a: {v}"
    for ok in (L.max_abs_number, -L.max_abs_number, 0.5):
        parse_document(doc(ok), L)
    for bad in (L.max_abs_number + 1, -L.max_abs_number - 1, 1e300):
        rejects(doc(bad), "out of range")


@pytest.mark.parametrize("doc", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1e999}',
                                 "a: .nan", "a: .inf", "a: -.Inf", "a: 1.0e+999"])
def test_non_finite_numbers_are_rejected(doc):
    rejects(doc, "is not a number a request may hold")


@pytest.mark.parametrize("encoding, bom", [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16", b""),
                                           ("utf-16-be", b"\xfe\xff"), ("utf-16-le", b"\xff\xfe"), ("utf-32", b"")])
def test_encodings_with_a_byte_order_mark_are_read(encoding, bom):
    text = json.dumps({**GOOD, "reason": "für Zoë"}, ensure_ascii=False)
    assert parse_request(bom + text.encode(encoding), L).reason == "für Zoë"


@pytest.mark.parametrize("raw, reason", [
    (json.dumps(GOOD).encode("utf-16-le"), "looks like UTF-16 without a byte-order mark"),
    (json.dumps({**GOOD, "reason": "café"}, ensure_ascii=False).encode("latin-1"), "not UTF-8 text: invalid continuation byte"),
    (b"\xff\xfe" + json.dumps(GOOD).encode("utf-16-le")[:-1], "not UTF-16 text: truncated data"),
    (b"\xff\xfe\x00\xd8a\x00", "not UTF-16 text: illegal"),        # a lone surrogate
    (b'{"a": "\xed\xa0\x80"}', "not UTF-8 text"),                    # a surrogate encoded in UTF-8
])
def test_undecodable_documents_are_rejected_with_the_reason(raw, reason):
    rejects(raw, reason)


@pytest.mark.parametrize("doc, reason", [
    ('{"a": "b"}\x00', "control character U+0000"),
    ("a: b\x1b[31m", "control character U+001B"),
    ('{"reason": "\\u0007"}', "U+0007"),
    ('{"reason": "pay \\u202egpj.exe"}', "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ('{"reason": "\\ud800"}', "U+D800 (a lone surrogate)"),
    ('{"requester": "a\\u200bb"}', "U+200B ZERO WIDTH SPACE"),
])
def test_control_and_invisible_characters_are_rejected(doc, reason):
    rejects(doc, reason)


def test_tabs_and_newlines_in_free_text_pass():
    assert parse_request({**GOOD, "reason": "line 1\n\tline 2\r\n"}, L).reason.startswith("line 1")


@pytest.mark.parametrize("field, value, char", [
    ("request_id", "r\u0435q-1", "U+0435 CYRILLIC SMALL LETTER IE"),
    ("request_id", "req\u200b-1", "U+200B ZERO WIDTH SPACE"),
    ("model", "digits-c\u217cassifier", "U+217C SMALL ROMAN NUMERAL FIFTY"),
    ("class_label", "Dre\u0455s", "U+0455 CYRILLIC SMALL LETTER DZE"),
    ("class_label", "Dress\u00a0", "U+00A0 NO-BREAK SPACE"),
])
def test_look_alike_ids_are_rejected_naming_the_character(field, value, char):
    rejects({**GOOD, field: value}, char)


def test_look_alike_subject_and_sample_ids_are_rejected():
    rejects({"model": "m", "kind": "subject", "subject_id": "subj-０００４２"}, "U+FF10 FULLWIDTH DIGIT ZERO")
    rejects({"model": "m", "kind": "samples", "sample_ids": ["digits/train/000001", "digits/train/00000l\u0301"]},
            "U+0301 COMBINING ACUTE ACCENT")


@pytest.mark.parametrize("field, value", [("class_label", "Ankle boot"), ("class_label", "T-shirt/top"),
                                          ("subject_id", "person-007"), ("request_id", "demo-subject-0042")])
def test_real_ids_pass(field, value):
    kind = "subject" if field == "subject_id" else "class"
    target = {} if field in ("class_label", "subject_id") else {"class_label": 1}
    assert getattr(parse_request({"model": "m", "kind": kind, **target, field: value}, L), field) == value


def test_concepts_are_nfkc_normalised_and_must_be_visible():
    req = {"model": "m", "kind": "concept"}
    assert parse_request({**req, "concept": "ｅｎｉｇｍａ"}, L).concept == "enigma"
    assert parse_request({**req, "concept": "Am\u0065\u0301lie"}, L).concept == "Amélie"
    rejects({**req, "concept": "enig\u200dma"}, "U+200D ZERO WIDTH JOINER")


def test_wrong_shapes_are_rejected():
    rejects("", "empty document")
    rejects(b"  \n", "empty document")
    rejects("[1, 2]", "must be a JSON/YAML object, got list")
    rejects("a: 1\n---\nb: 2\n", "expected a single document")
    rejects("{1: 2}", "object key 1 is not a string")
    rejects("? [a]\n: 1\n", "an object key is itself a list")
    rejects(42, "must be a JSON/YAML object, got int")


def test_rejected_documents_are_kept_bounded_with_their_hash():
    doc = '{"x": ' + "[" * 15_000 + "]" * 15_000 + "}"
    kept = json.loads(kept_text(doc, L))["rejected_document"]
    assert kept["size_bytes"] == len(doc) and kept["sha256"] == hashlib.sha256(doc.encode()).hexdigest()
    assert kept["kept_bytes"] == L.keep_bytes and kept["text"] == doc[:L.keep_bytes]
    undecodable = json.loads(kept_text(b"\xff\xff\x00abc", L))["rejected_document"]
    assert undecodable["text"] == "\\xff\\xff\x00abc"  # (stored JSON-escaped: \u0000)


def test_limits_come_from_params_yaml():
    from tasks.env import project_root

    params = yaml.safe_load((project_root() / "params.yaml").read_text())
    assert IntakeLimits.from_params(params["intake"]) == IntakeLimits()  # the file documents the defaults
    assert IntakeLimits.from_params({"max_depth": 3}).max_depth == 3
    with pytest.raises(ValueError, match="unknown keys"):
        IntakeLimits.from_params({"max_dpeth": 3})
    with pytest.raises(ValueError, match="positive integers"):
        IntakeLimits.from_params({"max_depth": 0})
    rejects("[[[[1]]]]", "nested deeper than 3 levels", IntakeLimits(max_depth=3))
