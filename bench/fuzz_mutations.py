"""Structure-aware mutations of valid deletion requests, for `bench.fuzz_intake`.

Every generator starts from a valid request of the fuzz deployment (a real subject, real sample
IDs, a real class) and breaks one thing the intake must survive. A `Doc` says what it expects:
`accept` (a valid request, however encoded), `reject` (a limit or rule it must trip, or no
request fields at all), or `any` (the mutation may or may not leave a valid request, e.g. a
truncation after the last field).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from unlearn_ops.request_parsing import IntakeLimits

MODEL = "digits-classifier"


@dataclass(frozen=True)
class Doc:
    family: str
    variant: str
    payload: bytes | Any     # bytes: an inbox file; anything else: a flow parameter (the Prefect UI)
    expect: str              # accept | reject | any
    name: str = ""           # the inbox file name (a few are long on purpose)


@dataclass(frozen=True)
class Context:
    subjects: list[str]
    train_ids: list[str]
    limits: IntakeLimits


def base_request(rng: random.Random, rid: str, ctx: Context) -> dict[str, Any]:
    kind = rng.choice(["class", "subject", "samples"])
    req: dict[str, Any] = {"request_id": rid, "model": MODEL, "kind": kind}
    if kind == "class":
        req["class_label"] = rng.choice([rng.randrange(10), str(rng.randrange(10))])
    elif kind == "subject":
        req["subject_id"] = rng.choice(ctx.subjects)
    else:
        req["sample_ids"] = rng.sample(ctx.train_ids, rng.randint(1, 12))
    if rng.random() < 0.5:
        req["requester"] = rng.choice(["dpo@example.org", "Zoë Ångström", "法務部", "ops 🚀"])
    if rng.random() < 0.5:
        req["reason"] = rng.choice(["GDPR art. 17", "licence withdrawn\nsee ticket #42", "café\tcrème"])
    if rng.random() < 0.3:
        req["received_at"] = "2026-11-29T10:00:00Z"
    return req


def to_text(rng: random.Random, req: Any, fmt: str | None = None) -> tuple[str, str]:
    fmt = fmt or rng.choice(["json", "json-indent", "yaml", "yaml-flow"])
    if fmt == "json":
        return fmt, json.dumps(req, ensure_ascii=rng.random() < 0.5)
    if fmt == "json-indent":
        return fmt, json.dumps(req, indent=2, ensure_ascii=False)
    return fmt, yaml.safe_dump(req, allow_unicode=True, default_flow_style=fmt == "yaml-flow", sort_keys=False)


def enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------ families
def valid(rng, req, ctx):
    fmt, text = to_text(rng, req)
    return Doc("valid", fmt, enc(text) if rng.random() < 0.85 else req, "accept")


def nesting(rng, req, ctx):
    lim = ctx.limits.max_depth
    depth = rng.choice([lim, lim + 1, lim + 2, 50, 1000, 3000, 15_000, rng.randint(lim + 1, 20_000)])
    shape = rng.choice(["list", "dict", "mixed"])
    field = rng.choice(["extra", "reason", "sample_ids", "class_label", "request_id"])
    inner = rng.choice(['"x"', "1", "null", "[]", "{}"])
    opens, closes = [], []
    for level in range(depth - 1):  # the request object is the first level
        if shape == "list" or (shape == "mixed" and level % 2):
            opens.append("[")
            closes.append("]")
        else:
            opens.append('{"a": ')
            closes.append("}")
    value = "".join(opens) + inner + "".join(reversed(closes))
    body = json.dumps({k: v for k, v in req.items() if k != field})[:-1]
    text = body + (", " if len(body) > 1 else "") + f'"{field}": {value}' + "}"
    if rng.random() < 0.15:  # the same depth as data passed as a flow parameter
        data: Any = json.loads(inner)
        for _ in range(depth - 1):
            data = [data] if shape == "list" else {"a": data}
        return Doc("nesting", f"parameter {shape} depth {depth}", {**req, field: data}, "reject")
    if rng.random() < 0.2 and depth < 200:  # YAML block style: indentation instead of brackets
        text = yaml.safe_dump({**req, field: json.loads(value)}, default_flow_style=False)
    return Doc("nesting", f"{shape} depth {depth} in {field}", enc(text), "reject")


def size(rng, req, ctx):
    lim = ctx.limits
    v = rng.choice(["reason at limit", "reason over limit", "pad to limit", "pad over limit", "huge file",
                    "many ids", "long key", "many keys", "long request_id", "long file name", "non-UTF-8 file name"])
    expect, name = "reject", ""
    if v == "reason at limit":
        req, expect = {**req, "reason": "r" * lim.max_string}, "accept"
    elif v == "reason over limit":
        req = {**req, "reason": "r" * rng.choice([lim.max_string + 1, 10 * lim.max_string, lim.max_bytes - 100])}
    elif v == "many ids":
        req = {"request_id": req["request_id"], "model": MODEL, "kind": "samples",
               "sample_ids": [f"digits/train/{i:06d}" for i in range(rng.choice([lim.max_items + 1, 3 * lim.max_items]))]}
    elif v == "long key":
        req = {**req, "k" * rng.choice([lim.max_key_chars + 1, 10_000]): 1}
    elif v == "many keys":
        req = {**req, **{f"k{i}": i for i in range(rng.choice([lim.max_keys + 1, 5_000]))}}
    elif v == "long request_id":
        req = {**req, "request_id": "r" * rng.choice([65, 4_000])}
    elif v == "long file name":  # with the 7-character prefix filing adds, past the 255 bytes a name may have
        expect, name = "accept", "n" * rng.randint(240, 243) + ".json"
    elif v == "non-UTF-8 file name":  # Linux names are bytes: this one reaches Python with surrogate escapes
        expect, name = "accept", os.fsdecode(b"req-\xff\xfe\x1b[31m.json")
    text = json.dumps(req)
    if v == "pad to limit":
        text, expect = text + " " * (lim.max_bytes - len(enc(text))), "accept"
    elif v == "pad over limit":
        text += " " * (lim.max_bytes - len(enc(text)) + rng.randint(1, 1000))
    elif v == "huge file":
        text += "\n" * rng.choice([lim.max_bytes, 4 * lim.max_bytes])
    if rng.random() < 0.15 and v in ("reason over limit", "many ids", "long key", "many keys", "long request_id"):
        return Doc("size", "parameter " + v, req, expect)
    return Doc("size", v, enc(text), expect, name)


def encoding(rng, req, ctx):
    req = {**req, "reason": "für Zoë — naïve café"}
    _, text = to_text(rng, req, rng.choice(["json-indent", "yaml"]))  # non-ASCII as such, not escaped
    v = rng.choice(["utf-8-sig", "utf-16", "utf-16-le+bom", "utf-16-be+bom", "utf-32", "utf-16-le no bom",
                    "utf-16-be no bom", "utf-32-le no bom", "latin-1", "cp1252", "invalid byte", "overlong",
                    "utf-8 surrogate", "utf-16 bom on utf-8", "utf-16 odd length", "double bom"])
    expect = "accept" if v in ("utf-8-sig", "utf-16", "utf-16-le+bom", "utf-16-be+bom", "utf-32") else "reject"
    if v == "utf-16-le+bom":
        raw = b"\xff\xfe" + text.encode("utf-16-le")
    elif v == "utf-16-be+bom":
        raw = b"\xfe\xff" + text.encode("utf-16-be")
    elif v in ("utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252"):
        raw = text.encode(v, "replace")
    elif v.endswith("no bom"):
        raw = text.encode(v.split()[0])
    elif v in ("invalid byte", "overlong", "utf-8 surrogate"):
        bad = {"invalid byte": rng.choice([b"\xff", b"\xfe", b"\x80", b"\xc3"]), "overlong": b"\xc0\xaf",
               "utf-8 surrogate": b"\xed\xa0\x80"}[v]
        raw = enc(text)
        cut = rng.randrange(len(raw))
        raw = raw[:cut] + bad + raw[cut:]
    elif v == "utf-16 bom on utf-8":
        raw = b"\xff\xfe" + enc(text)
    elif v == "utf-16 odd length":
        raw = text.encode("utf-16") + b"\x00"
    else:  # double BOM: the second one is a character of the text
        raw, expect = b"\xef\xbb\xbf" + text.encode("utf-8-sig"), "any"
    return Doc("encoding", v, raw, expect)


CONTROLS = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9f", "\u200b", "\u200c",
            "\u200d", "\u200e", "\u202e", "\u2066", "\u2069", "\ufeff", "\ud800", "\udfff"]


def control(rng, req, ctx):
    field = rng.choice(["request_id", "model", "requester", "reason", "target"])
    if field == "target":
        field = {"class": "class_label", "subject": "subject_id", "samples": "sample_ids"}[req["kind"]]
    value = req.get(field, "text")
    if isinstance(value, list):
        value = value[0]
    value = str(value)
    harmless = field in ("requester", "reason") and rng.random() < 0.2
    c = rng.choice(["\t", "\n", "\r\n"]) if harmless else rng.choice(CONTROLS)
    cut = rng.randint(0, len(value))
    value = value[:cut] + c + value[cut:]
    req = {**req, field: [value] if field == "sample_ids" else value}
    how = rng.choice(["escaped", "raw", "parameter"])
    expect = "accept" if harmless else "reject"
    if how == "parameter":
        return Doc("control", f"parameter {field} U+{ord(c[0]):04X}", req, expect)
    text = json.dumps(req, ensure_ascii=how == "escaped")
    if how == "raw" and harmless:
        expect = "any"  # JSON refuses a raw tab or newline in a string; YAML (the fallback) folds it
    return Doc("control", f"{how} {field} U+{ord(c[0]):04X}", enc(text), expect)


TAGS = ["!!python/object/apply:os.system", "!!python/name:os.system", "!!python/object/new:dict", "!!binary",
        "!!str", "!!int", "!!set", "!!omap", "!!pairs", "!!timestamp", "!!map", "!custom", "!", "!<tag:yaml.org,2002:str>",
        "!!merge", "!e!local"]


def yaml_tags(rng, req, ctx):
    tag = rng.choice(TAGS)
    lines = yaml.safe_dump(req, allow_unicode=True, sort_keys=False, default_flow_style=False).splitlines()
    where = rng.choice(["value", "root", "directive"])
    tops = [i for i, line in enumerate(lines) if re.match(r"\w+:( |$)", line)]  # `key: value` of the request
    if where == "root":
        text = "--- " + tag + "\n" + "\n".join(lines)
    else:
        i = rng.choice(tops)
        key, _, value = lines[i].partition(":")
        lines[i] = f"{key}: {tag} {value.strip()}"
        text = ("%TAG !e! tag:example.com,2000:\n---\n" if where == "directive" else "") + "\n".join(lines)
    return Doc("yaml_tags", f"{tag} on {where}", enc(text), "reject")


def yaml_anchors(rng, req, ctx):
    lim = ctx.limits
    body = yaml.safe_dump({k: v for k, v in req.items() if k not in ("requester", "reason")}, sort_keys=False)
    v = rng.choice(["value alias", "inline merge", "merge alias", "billion laughs", "recursive", "recursive merge",
                    "undefined alias", "many aliases", "wide expansion", "alias as key"])
    expect = "reject"
    if v == "value alias":
        text, expect = body + "requester: &r alice\nreason: *r\n", "accept"
    elif v == "inline merge":
        rest = {k: x for k, x in req.items() if k not in ("model", "kind")}
        text = f"<<: {{model: {MODEL}, kind: {req['kind']}}}\n" + yaml.safe_dump(rest, sort_keys=False)
        expect = "accept"
    elif v == "merge alias":
        text = f"base: &b {{model: {MODEL}}}\n<<: *b\n" + body.replace(f"model: {MODEL}\n", "")
    elif v == "billion laughs":
        levels, fan = rng.randint(3, 9), rng.randint(2, 10)
        text = body + "l0: &l0 [" + ",".join(["lol"] * fan) + "]\n" + "".join(
            f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * fan) + "]\n" for i in range(1, levels))
    elif v == "recursive":
        text = body + "x: &x [*x]\n"
    elif v == "recursive merge":
        text = body + "x: &x {<<: *x}\n"
    elif v == "undefined alias":
        text = body + "reason: *nowhere\n"
    elif v == "many aliases":
        text = body + "requester: &r a\nx: [" + ",".join(["*r"] * rng.randint(lim.max_aliases + 1, 200)) + "]\n"
    elif v == "wide expansion":
        text = body + "w: &w [" + ",".join(["1"] * 2000) + "]\nx: [" + ",".join(["*w"] * lim.max_aliases) + "]\n"
    else:
        text = body + "requester: &k reason\n*k : hello\n"
        expect = "any"
    return Doc("yaml_anchors", v, enc(text), expect)


def numbers(rng, req, ctx):
    """A number literal in a field. `reject` where a limit must trip (out of range, not finite, too
    long) or the field takes no number; `any` where the value may be fine (`3.0` is class 3; a
    small number is a Unix time to pydantic; YAML 1.1 reads `0o7` as 7)."""
    lim = ctx.limits
    over = [str(lim.max_abs_number + 1), str(-lim.max_abs_number - 1), "1" + "0" * 30,
            "9" * rng.choice([lim.max_number_chars + 1, 4301, 20_000]), "NaN", "Infinity", "-Infinity", "1e999",
            "-1e999", ".nan", ".inf", "-.inf"]
    fine = ["1.5", "-1", "42", "3.0", "1e-400", "true", "0x1F", "0o7", "1_0", "1:30", "-0"]
    literal = rng.choice(over + fine)
    field = rng.choice(["class_label", "received_at", "request_id", "extra"])
    base = {k: v for k, v in req.items() if k not in ("subject_id", "sample_ids", "class_label")}
    base = {**base, "kind": "class", "class_label": 1}
    rest = {k: v for k, v in base.items() if k != field}
    expect = "reject" if literal in over or field in ("request_id", "extra") else "any"
    if rng.random() < 0.5:
        text = yaml.safe_dump(rest, sort_keys=False) + f"{field}: {literal}\n"
        if literal in ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-400", "0o7") and field != "extra":
            expect = "any"  # not numbers in YAML 1.1 (`.nan`, `1.0e+999`, `07` are): a string, e.g. a fine request_id
    else:
        text = json.dumps(rest)[:-1] + f', "{field}": {literal}' + "}"
        if literal == "0o7" and field != "extra":
            expect = "any"  # not JSON: read as YAML flow, where it is a string
    return Doc("numbers", f"{literal[:12]} in {field}", enc(text), expect)


HOMOGLYPHS = {"a": "аɑα", "e": "еє", "o": "оοᴏ", "p": "рρ", "c": "сϲ", "s": "ѕ", "i": "іι", "l": "ӏⅼ", "d": "ԁ",
              "g": "ɡ", "t": "т", "r": "г", "0": "０Оο", "1": "１Ⅰ", "2": "２", "3": "３З", "5": "５", "-": "‐‑−–",
              "/": "∕⁄", ".": "․", "_": "＿"}


def lookalike(rng, req, ctx):
    field = rng.choice(["request_id", "model", "target"])
    if field == "target":
        field = {"class": "class_label", "subject": "subject_id", "samples": "sample_ids"}[req["kind"]]
        if field == "class_label":
            req = {**req, "class_label": str(req["class_label"])}
    value = req[field][0] if field == "sample_ids" else req[field]
    how = rng.choice(["homoglyph", "fullwidth", "combining", "zero width", "math bold", "nbsp"])
    if how == "homoglyph":
        spots = [i for i, c in enumerate(value) if c in HOMOGLYPHS]
        i = rng.choice(spots) if spots else 0
        value = value[:i] + rng.choice(HOMOGLYPHS.get(value[i:i + 1], "а")) + value[i + 1:]
    elif how == "fullwidth":
        value = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)
    elif how == "combining":
        i = rng.randint(1, len(value))
        value = value[:i] + rng.choice("\u0301\u0308\u0338") + value[i:]
    elif how == "zero width":
        i = rng.randint(0, len(value))
        value = value[:i] + rng.choice("\u200b\u200c\u200d\u2060") + value[i:]
    elif how == "math bold":
        value = "".join(chr(0x1D41A + ord(c) - 97) if "a" <= c <= "z" else c for c in value) if any(
            "a" <= c <= "z" for c in value) else "𝟏" + value
    else:
        value = value + "\u00a0"
    req = {**req, field: [value] + req[field][1:] if field == "sample_ids" else value}
    if rng.random() < 0.15:
        return Doc("lookalike", f"parameter {how} in {field}", req, "reject")
    return Doc("lookalike", f"{how} in {field}", enc(to_text(rng, req)[1]), "reject")


def duplicate_keys(rng, req, ctx):
    key = rng.choice(list(req))
    again = rng.choice([req[key], "other", 7])
    if rng.random() < 0.5:
        text = json.dumps(req)[:-1] + f", {json.dumps(key)}: {json.dumps(again)}" + "}"
        return Doc("duplicate_keys", f"json {key}", enc(text), "reject")
    quoted = rng.choice([key, f"'{key}'", f'"{key}"'])
    text = yaml.safe_dump(req, allow_unicode=True, sort_keys=False) + f"{quoted}: {json.dumps(again)}\n"
    return Doc("duplicate_keys", f"yaml {quoted}", enc(text), "reject")


def truncation(rng, req, ctx):
    fmt, text = to_text(rng, req)
    raw = text.encode(rng.choice(["utf-8", "utf-8", "utf-16"]))
    cut = rng.randint(0, len(raw) - 1)
    return Doc("truncation", f"{fmt} cut at {cut}/{len(raw)}", raw[:cut], "reject" if cut == 0 else "any")


WRONG = [None, True, 0, -1, 3.5, [], {}, ["a", ["b"]], {"k": "v"}, "", "yesterday", "x" * 100, [1, 2, 3]]


def wrong_types(rng, req, ctx):
    if rng.random() < 0.15:
        root = rng.choice([[req], "a string", 42, None, True, [], [[req]]])
        fmt, text = to_text(rng, root)
        return Doc("wrong_types", f"root {type(root).__name__}", enc(text), "reject")
    field = rng.choice(list(req) + ["sample_ids", "subject_id"])
    value = rng.choice(WRONG)
    req = {**req, field: value}
    if rng.random() < 0.15:
        return Doc("wrong_types", f"parameter {field}={value!r:.12}", req, "any")
    return Doc("wrong_types", f"{field}={value!r:.12}", enc(to_text(rng, req)[1]), "any")


GARBAGE_TEXTS = ["", " ", "\n\n", "# only a comment\n", "null", "~", "[]", "{}", "---", "...", "---\n...\n",
                 "a: 1\n---\nb: 2\n", '{"a": 1}{"b": 2}', "[1, 2", "{{{{", "]]]]", '"just a string"', "1234", "- a\n- b\n",
                 "key: value: other", "\t\tx: 1", "@", "`", "%YAML 9.9\n---\na: 1"]


def garbage(rng, req, ctx):
    v = rng.choice(["random bytes", "random ascii", "random unicode", "fixed"])
    if v == "random bytes":
        return Doc("garbage", v, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4000))), "reject")
    if v == "random ascii":
        text = "".join(rng.choice('{}[]":,- \n\tabc123!&*|>') for _ in range(rng.randint(1, 2000)))
        return Doc("garbage", v, enc(text), "reject")
    if v == "random unicode":
        text = "".join(chr(rng.randint(0x20, 0x2FFFF)) for _ in range(rng.randint(1, 500)))
        return Doc("garbage", v, text.encode("utf-8", "surrogatepass"), "reject")
    text = rng.choice(GARBAGE_TEXTS)
    return Doc("garbage", f"fixed {text[:12]!r}", enc(text), "reject")


FAMILIES: dict[str, Callable[[random.Random, dict[str, Any], Context], Doc]] = {
    "valid": valid, "nesting": nesting, "size": size, "encoding": encoding, "control": control,
    "yaml_tags": yaml_tags, "yaml_anchors": yaml_anchors, "numbers": numbers, "lookalike": lookalike,
    "duplicate_keys": duplicate_keys, "truncation": truncation, "wrong_types": wrong_types, "garbage": garbage,
}


def generate(index: int, seed: int, ctx: Context) -> Doc:
    """Document `index` of the corpus: the family by round robin (every slice covers all), the rest
    from a generator seeded by (seed, index), so any slice is the same documents as in a full run."""
    rng = random.Random(f"{seed}:{index}")
    family = list(FAMILIES)[index % len(FAMILIES)]
    doc = FAMILIES[family](rng, base_request(rng, f"fz-{seed}-{index:06d}", ctx), ctx)
    return doc
