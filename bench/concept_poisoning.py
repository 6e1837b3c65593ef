"""Benchmark `concept_poisoning` (arXiv 2405.15662) side by side with retraining from scratch.

Images (Fashion-MNIST, the project's SmallCNN): for each seed and class, the original model
(`bench.references.base_model`) forgets the whole class with the params.yaml settings; the
reference is the same architecture retrained from scratch without the class, same schedule and
seed (`bench.references.retrain_reference`, cached by exact IDs + schedule + seed, with the
seconds it took when it was trained). Metrics per model, as in the paper:

    A_train   forgotten class, its training images (→ 0)
    A_test    forgotten class, test images (→ 0)
    A_global  test accuracy on the retained classes (target: within 0.5 pt of the original)
    Fr        SVM-transfer MIA (`unlearn_ops.verify.mia.forgetting_rate`): share of forget images
              an attacker fitted on the original model calls non-members (→ 1)
    MIA gap   |acc − 0.5| of the loss-based logistic attack (`simple_mia`, forget-class train vs
              forget-class non-members), next to retraining's own gap
    time      wall seconds of the method (this run) vs retraining's (when it was trained);
              speed-up = their ratio. The machine's load average is recorded: on a shared
              machine both numbers move with it.

An ablation runs poison modes × label modes (paper: localized|center|random|full|none ×
targeted|random|keep) on fewer classes / seeds (say which in the output).

Text (Rotten Tomatoes, MiniLM-L6 frozen + linear head): forget one class ("fresh") and one movie
(all its training snippets) with label-only poisons and with LayerIntegratedGradients masks.
The encoder is frozen, so "retraining" = a new head fitted on the retain set's embeddings; the
embedding pass over the train pool is run once here, its measured time pro-rated to the retain
set and added to the head's fitting time (stated in the output).

    python -m bench concept_poisoning [--quick] [--classes 0,1,...] [--seeds 0,1,2]
        [--ablation-classes 0,6] [--ablation-seeds 0] [--report-class 0] [--no-text] [--no-images]
        [--out-dir DIR]
    python -m bench concept_poisoning --merge RUN.json ... [--out-dir DIR]

The image part retrains one model per (class, seed): hours on 2 cores. It splits into processes
(e.g. one per seed, `--no-text --seeds 1 --ablation-classes '' --ablation-seeds '' --out-dir D1`,
one torch thread each) whose JSON results `--merge` combines into one report; the text section is
taken from whichever run has it.

`--quick` runs digits (class 3, seed 0, a 2-epoch retrain) and a tiny BERT on 300 RT snippets: a
smoke test of the protocol whose numbers mean nothing; it writes only with --out-dir.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench import references as refs
from bench.common import (
    OUT_DIR,
    fmt,
    load_runs,
    md_table,
    mean_std,
    measure,
    method_settings,
    require_same,
    write_results,
)
from flows.params import load_params
from unlearn_ops.data.sources import LOADERS
from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods import run_method
from unlearn_ops.methods.concept_poisoning import LABEL_MODES, POISON_MODES
from unlearn_ops.models.text import embed_batched, text_classifier, tiny_text_spec, tokenized_part
from unlearn_ops.training import TrainConfig, accuracy, fit
from unlearn_ops.utils import project_root
from unlearn_ops.verify.mia import forgetting_rate, matched_nonmembers, simple_mia

NAME = "concept_poisoning"
IMG_DIR = project_root() / "docs" / "methods" / "img"
TARGETS = {"A_train": 0.01, "A_test": 0.01, "A_global_drop": 0.005, "Fr": 0.95, "speedup": 10.0}
# Text runs differ from the image defaults only where the data demands it: a two-class head on
# 384-d embeddings needs a larger step, and the LIG variant caps the poisons (32 passes each).
TEXT_PARAMS = {"analysis_per_class": 200, "text_bank_size": 200, "retain_per_class": 500, "epochs": 5, "lr": 1e-2}
TEXT_VARIANTS = {"label-only (none + targeted)": {"poison": "none"},
                 "LIG mask (localized + targeted, ≤64 poisons)": {"poison": "localized", "max_poisons": 64}}


# ============================================================================ images
def image_metrics(model: nn.Module, original: nn.Module, splits: Splits, cls: int, forget_nm: Part,
                  seed: int) -> dict[str, float]:
    test = splits.test
    mia = simple_mia(model, splits.forget.sample(len(forget_nm), seed + 14), forget_nm, seed=seed)["mia_simple"]
    return {"A_train": accuracy(model, splits.forget), "A_test": accuracy(model, test.where(test.y == cls)),
            "A_global": accuracy(model, test.where(test.y != cls)), "test_all": accuracy(model, test),
            "Fr": forgetting_rate(original, model, splits.forget, forget_nm, seed=seed),
            "mia": mia, "mia_gap": abs(mia - 0.5)}


def run_image_case(ds: str, seed: int, cls: int, original: nn.Module, method_params: dict[str, dict[str, Any]],
                   retrain_cfg: TrainConfig | None, report_dir: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One (seed, class): original, retrain and each method config, their concept grids drawn into
    `report_dir`. Returns (row, details of the first)."""
    store = refs.store(ds)
    active = store.active_ids()
    aset = set(active)
    forget = [i for i in store.class_ids(cls) if i in aset]
    splits = store.splits(forget)
    forget_nm = matched_nonmembers(splits.forget, splits.nonmember)
    ref_model, ref_seconds = refs.retrain_reference(ds, active, forget, seed, cfg=retrain_cfg)
    row: dict[str, Any] = {"dataset": ds, "seed": seed, "class": cls}
    row["original"] = image_metrics(original, original, splits, cls, forget_nm, seed)
    row["retrain"] = {**image_metrics(ref_model, original, splits, cls, forget_nm, seed), "seconds": ref_seconds}
    first_details: dict[str, Any] = {}
    for label, params in method_params.items():
        p = {**params, "seed": seed, "report_dir": report_dir}
        run = measure(lambda p=p: run_method(NAME, original, splits, p))
        result = run.result
        m = image_metrics(result.model, original, splits, cls, forget_nm, seed)
        m.update(seconds=run.seconds, cpu_seconds=run.cpu_seconds, speedup=ref_seconds / max(run.seconds, 1e-9),
                 A_global_drop=row["original"]["A_global"] - m["A_global"],
                 A_global_vs_retrain=row["retrain"]["A_global"] - m["A_global"],
                 mia_gap_retrain=row["retrain"]["mia_gap"],
                 donor=result.details["donors"][str(cls)]["donor"], rule=result.details["donors"][str(cls)]["rule"])
        row[label] = m
        if not first_details:
            first_details = result.details
    return row, first_details


def target_flags(rows: list[dict[str, Any]], name: str) -> dict[str, str]:
    checks = {
        "A_train ≤ 0.01": lambda m: m["A_train"] <= TARGETS["A_train"],
        "A_test ≤ 0.01": lambda m: m["A_test"] <= TARGETS["A_test"],
        "A_global within 0.5 pt of the original": lambda m: m["A_global_drop"] <= TARGETS["A_global_drop"],
        "Fr ≥ 0.95": lambda m: m["Fr"] >= TARGETS["Fr"],
        "speed-up ≥ 10×": lambda m: m["speedup"] >= TARGETS["speedup"],
    }
    out = {}
    for label, ok in checks.items():
        passed = sum(bool(ok(r[name])) for r in rows)
        out[label] = "yes" if passed == len(rows) else f"no ({passed}/{len(rows)} runs)"
    return out


COLUMNS = [("A_train", "A_train"), ("A_test", "A_test"), ("A_global", "A_global"), ("test_all", "test (all)"),
           ("Fr", "Fr"), ("mia_gap", "MIA gap"), ("seconds", "time (s)")]


def summary_table(rows: list[dict[str, Any]], names: list[str]) -> str:
    header = ["model"] + [label for _, label in COLUMNS] + ["speed-up"]
    body = []
    for name in ["original", "retrain"] + names:
        cells = [name]
        for key, _ in COLUMNS:
            vals = [r[name].get(key, float("nan")) for r in rows]
            cells.append("–" if key == "seconds" and name == "original" else fmt(vals, 1 if key == "seconds" else 4))
        cells.append("–" if name in ("original", "retrain") else
                     f"{mean_std([r[name]['speedup'] for r in rows])[0]:.1f}× (min {min(r[name]['speedup'] for r in rows):.1f}×)")
        body.append(cells)
    return md_table(header, body)


def per_class_table(rows: list[dict[str, Any]], name: str) -> str:
    header = ["class", "donor (rule)", "A_train", "A_test", "A_global", "orig A_global", "retrain A_global",
              "Fr", "MIA gap", "retrain gap", "time (s)", "retrain (s)", "speed-up"]
    body = []
    for c in sorted({r["class"] for r in rows}):
        rs = [r for r in rows if r["class"] == c]
        m = lambda key, who=name, rs=rs: mean_std([r[who][key] for r in rs])[0]  # noqa: E731
        donors = sorted({f"{r[name]['donor']} ({r[name]['rule']})" for r in rs})
        body.append([c, ", ".join(donors), f"{m('A_train'):.4f}", f"{m('A_test'):.4f}", f"{m('A_global'):.4f}",
                     f"{m('A_global', 'original'):.4f}", f"{m('A_global', 'retrain'):.4f}", f"{m('Fr'):.3f}",
                     f"{m('mia_gap'):.3f}", f"{m('mia_gap', 'retrain'):.3f}", f"{m('seconds'):.1f}",
                     f"{m('seconds', 'retrain'):.0f}", f"{m('speedup'):.1f}×"])
    return md_table(header, body)


def ablation_table(rows: list[dict[str, Any]]) -> str:
    header = ["poison", "labels", "A_train", "A_test", "A_global drop (pt)", "Fr", "MIA gap", "time (s)"]
    body = []
    for poison in POISON_MODES:
        for labels in LABEL_MODES:
            key = f"{poison}+{labels}"
            ms = [r[key] for r in rows if key in r]
            if not ms:
                continue
            body.append([poison, labels, fmt([m["A_train"] for m in ms]), fmt([m["A_test"] for m in ms]),
                         fmt([100 * m["A_global_drop"] for m in ms], 2), fmt([m["Fr"] for m in ms]),
                         fmt([m["mia_gap"] for m in ms]), fmt([m["seconds"] for m in ms], 1)])
    return md_table(header, body)


# ============================================================================ concept report picture
def render_class_report(details: dict[str, Any], cls: int, class_names: list[str], path: Path) -> Path:
    """The concept report of one class as a picture: its top concepts with IG importance and
    example patches (rows cut from the method's patch grid), the donor and its concept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.image import imread

    grid = imread(details["patch_grid"])
    scale = details["patch_grid_scale"]
    cell = (details["patch_grid_cell"] + 1) * scale
    names = details["concepts"]
    info = details["classes"][str(cls)]
    donor = details["donors"][str(cls)]
    d_top = details["classes"][str(donor["donor"])]["top_concepts"][0]
    shown = list(dict.fromkeys(info["top_concepts"] + [donor["donor_concept"], d_top]))
    fig, axes = plt.subplots(len(shown), 2, figsize=(9, 1.1 * len(shown) + 1.2),
                             gridspec_kw={"width_ratios": [1, 3]}, squeeze=False)
    importance = dict(zip(info["top_concepts"], info["importance"], strict=True))
    top = max(abs(v) for v in importance.values()) or 1.0
    for ax_bar, ax_img, concept in zip(axes[:, 0], axes[:, 1], shown, strict=True):
        k = names.index(concept)
        row = grid[k * cell: (k + 1) * cell + scale]
        ax_img.imshow(row, cmap="gray", interpolation="nearest")
        ax_img.set_axis_off()
        value = importance.get(concept)
        ax_bar.barh([0], [value if value is not None else 0], color="tab:blue" if value is not None else "white")
        ax_bar.set_xlim(-top * 0.1, top * 1.1)
        ax_bar.set_yticks([])
        tags = []
        if concept in info["top_concepts"]:
            tags.append(f"#{info['top_concepts'].index(concept) + 1} of {class_names[cls]}")
        if concept == donor["donor_concept"]:
            tags.append("donor concept")
        if concept == d_top:
            tags.append(f"top-1 of {class_names[donor['donor']]}")
        ax_bar.set_title(f"{concept}: " + ", ".join(tags), fontsize=8, loc="left")
        ax_bar.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("class-mean IG attribution", fontsize=8)
    fig.suptitle(f"Concept report, class {cls} ({class_names[cls]}): donor = {donor['donor']} "
                 f"({class_names[donor['donor']]}) by the {donor['rule']} rule via {donor['donor_concept']}",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ============================================================================ text
def text_bench(quick: bool, seed: int, base_params: dict[str, Any]) -> dict[str, Any]:
    """Forget one class and one movie from the RT sentiment classifier; retrain = a new head."""
    t = load_params()["text"]
    store = refs.store("rt")
    raw = LOADERS["rt"]()
    movie_of = {f"rt/train/{i:06d}": str(m) for i, m in enumerate(raw.extra["train"]["movie_name"])}
    movie_of.update({f"rt/test/{i:06d}": str(m) for i, m in enumerate(raw.extra["test"]["movie_name"])})
    active = store.active_ids()
    if quick:
        spec = {**tiny_text_spec(max_length=32), "seed": seed}
        active = list(store.part(active).sample(300, seed).ids)
    else:
        spec = {"arch": "text", "encoder": t["encoder"], "num_classes": 2, "max_length": t["max_length"], "seed": seed}
    model = text_classifier(**{k: v for k, v in spec.items() if k != "arch"})
    test_ids, nm_ids = store.pool_ids("test"), store.pool_ids("nonmember")
    if quick:
        test_ids, nm_ids = test_ids[:200], nm_ids[:200]
    head_cfg = TrainConfig(epochs=t["epochs"], lr=t["lr"], batch_size=t["batch_size"], seed=seed, device="cpu")

    def embed(ids: list[str]) -> tuple[Part, float]:
        part = tokenized_part(model, store.part(ids))
        start = time.perf_counter()
        e = embed_batched(model, part.x)
        return Part(part.ids, e, part.y), time.perf_counter() - start

    print(f"[{NAME}] text: embedding {len(active)} train + {len(test_ids)} test + {len(nm_ids)} non-member snippets",
          flush=True)
    train_e, train_embed_s = embed(active)
    test_e, _ = embed(test_ids)
    nm_e, _ = embed(nm_ids)
    original = copy.deepcopy(model)
    head_s = measure(lambda: fit(original.head, train_e, head_cfg)).seconds
    index = {i: n for n, i in enumerate(train_e.ids)}

    by_movie: dict[str, list[str]] = {}
    for i in active:
        by_movie.setdefault(movie_of[i], []).append(i)
    movie = max(sorted(by_movie), key=lambda m: len(by_movie[m]))
    cases = {"class 1 (fresh)": ([i for i, y in zip(train_e.ids, train_e.y.tolist(), strict=True) if y == 1], "class"),
             f"movie {movie!r}": (by_movie[movie], "movie")}
    params = {**base_params, **TEXT_PARAMS, "seed": seed}
    if quick:
        params.update(analysis_per_class=40, text_bank_size=40, retain_per_class=60)
    out: dict[str, Any] = {"spec": spec, "train_snippets": len(active), "embed_seconds": train_embed_s,
                           "head_seconds": head_s, "movie": movie, "params": params, "cases": {}}
    for case, (forget_ids, kind) in cases.items():
        fset = set(forget_ids)
        retain_ids = [i for i in active if i not in fset]
        splits = store.splits(forget_ids, retain_ids)
        splits = Splits(splits.forget, splits.retain, store.part(test_ids), store.part(nm_ids), 2)
        f_e = train_e.subset([index[i] for i in forget_ids])
        r_e = train_e.subset([index[i] for i in retain_ids])
        if kind == "class":
            t_forget, t_rest = test_e.y == 1, test_e.y != 1
            nm_match = nm_e.where(nm_e.y == 1)
        else:
            t_forget = torch.tensor([movie_of[i] == movie for i in test_e.ids])
            t_rest = ~t_forget
            nm_match = matched_nonmembers(f_e, nm_e)

        retrained = copy.deepcopy(model)  # same pretrained encoder, the untrained seeded head
        fit_s = measure(lambda h=retrained.head, d=r_e: fit(h, d, head_cfg)).seconds

        def metrics(head: nn.Module, f_e=f_e, nm=nm_match, t_forget=t_forget, t_rest=t_rest) -> dict[str, float]:
            """Accuracies, Fr and loss-MIA of `head` on cached embeddings (the encoder is frozen)."""
            mia = simple_mia(head, f_e.sample(len(nm), seed + 14), nm, seed=seed)["mia_simple"]
            return {"A_train": accuracy(head, f_e), "A_test": accuracy(head, test_e.where(t_forget)),
                    "A_global": accuracy(head, test_e.where(t_rest)), "test_all": accuracy(head, test_e),
                    "Fr": forgetting_rate(original.head, head, f_e, nm, seed=seed),
                    "mia": mia, "mia_gap": abs(mia - 0.5)}

        retrain_s = fit_s + train_embed_s * len(retain_ids) / len(active)
        res: dict[str, Any] = {"n_forget": len(forget_ids), "n_forget_test": int(t_forget.sum()),
                               "original": metrics(original.head),
                               "retrain": {**metrics(retrained.head), "seconds": retrain_s}}
        for label, extra in TEXT_VARIANTS.items():
            run = measure(lambda e=extra, sp=splits: run_method(NAME, original, sp, {**params, **e}))
            result = run.result
            enc_same = all(torch.equal(a, b) for a, b in zip(result.model.encoder.state_dict().values(),
                                                              original.encoder.state_dict().values(), strict=True))
            assert enc_same, "text metrics reuse the cached embeddings: the encoder must be unchanged"
            m = metrics(result.model.head)
            m.update(seconds=run.seconds, cpu_seconds=run.cpu_seconds, speedup=retrain_s / max(run.seconds, 1e-9),
                     A_global_drop=res["original"]["A_global"] - m["A_global"],
                     tokens_masked=result.details["tokens_masked"], n_poisons=result.details["n_poisons"],
                     top_concepts={c: v["top_concepts"] for c, v in result.details["classes"].items()})
            res[label] = m
        out["cases"][case] = res
        print(f"  text {case}: " + "; ".join(f"{k} A_train {res[k]['A_train']:.3f} A_test {res[k]['A_test']:.3f}"
                                             for k in ["original", "retrain", *TEXT_VARIANTS]), flush=True)
    return out


def text_report(text: dict[str, Any]) -> list[str]:
    lines = [f"## Text: Rotten Tomatoes, {'tiny BERT (quick)' if 'hidden_size' in str(text['spec']) else 'MiniLM-L6 frozen + linear head'}",
             "", f"{text['train_snippets']} training snippets; the encoder's pass over them took "
             f"{text['embed_seconds']:.0f} s and the original head {text['head_seconds']:.1f} s. Retraining = a new head "
             "on the retain set's embeddings; its time = the measured head fit + the embedding time pro-rated to the "
             f"retain set. Method settings: `{text['params']}` plus each variant's. One seed.", ""]
    header = ["case", "model", "A_train", "A_test", "A_global", "Fr", "MIA gap", "time (s)", "speed-up"]
    body = []
    for case, res in text["cases"].items():
        for name in ["original", "retrain", *TEXT_VARIANTS]:
            m = res[name]
            body.append([f"{case} ({res['n_forget']} train / {res['n_forget_test']} test)", name,
                         f"{m['A_train']:.3f}", f"{m['A_test']:.3f}", f"{m['A_global']:.3f}", f"{m['Fr']:.3f}",
                         f"{m['mia_gap']:.3f}", f"{m.get('seconds', float('nan')):.1f}" if name != "original" else "–",
                         f"{m['speedup']:.1f}×" if "speedup" in m else "–"])
    lines += [md_table(header, body), ""]
    first = next(iter(text["cases"].values()))
    concepts = first[next(iter(TEXT_VARIANTS))]["top_concepts"]
    lines += ["Top concepts per class (PCBM on the word bank, class-mean IG): " +
              "; ".join(f"class {c}: {', '.join(v)}" for c, v in concepts.items()), ""]
    return lines


# ============================================================================ merge
def merge(files: list[Path], out_dir: Path, argv: list[str]) -> dict[str, Any]:
    """One report from several runs (their image rows concatenated, the text section from the run
    that has one). Runs must share the data set, the method settings and quick-ness."""
    parts = load_runs(files)
    images = [p for p in parts if p["rows"] or p["ablation_rows"]]
    if not images:
        raise SystemExit("none of the runs has image results")
    require_same(images, ("dataset", "quick", "params"))
    texts = [p for p in parts if p.get("text")]
    rows = sorted((r for p in parts for r in p["rows"]), key=lambda r: (r["seed"], r["class"]))
    ablation = [r for p in parts for r in p["ablation_rows"]]
    ab_parts = [p for p in parts if p["ablation_rows"]]
    pngs = [p for p in images if p.get("concept_report_png")]
    text = texts[0]["text"] if texts else None
    runs = list(zip(files, parts, strict=True))
    notes = [f"Merged from {len(parts)} runs: " + "; ".join(
        f"`{f}` (commit {p['machine']['commit']}, {p['machine']['date']}, {p['machine']['torch_threads']} torch "
        f"thread(s), {len(p['rows'])} image runs{', text' if p.get('text') else ''})" for f, p in runs) + ".", ""]
    if texts and texts[0]["machine"]["commit"] != images[0]["machine"]["commit"]:
        notes += [f"The text section is the run of commit {texts[0]['machine']['commit']} "
                  f"({texts[0]['machine']['date']}), kept as recorded.", ""]
    # a text-only run stopped during its image part still has a whole text section: completeness is the image runs
    payload = {"quick": images[0]["quick"], "complete": all(p.get("complete") for p in images),
               "dataset": images[0]["dataset"], "classes": sorted({r["class"] for r in rows}),
               "seeds": sorted({r["seed"] for r in rows}),
               "ablation": {"classes": sorted({r["class"] for r in ablation}), "seeds": sorted({r["seed"] for r in ablation}),
                            "combos": ab_parts[0]["ablation"]["combos"] if ab_parts else []},
               "params": images[0]["params"], "targets": TARGETS, "rows": rows, "ablation_rows": ablation,
               "text": text, "load_average": [p["load_average"] for p in parts],
               "concept_report": pngs[0]["concept_report"] if pngs else {},
               "concept_report_png": pngs[0]["concept_report_png"] if pngs else None,
               "merged_from": [{"file": str(f), "argv": p.get("argv"), "machine": p["machine"]} for f, p in runs],
               "argv": argv}
    png = Path(payload["concept_report_png"]) if payload["concept_report_png"] else None
    markdown = report(rows, ablation, text, payload["dataset"], payload["classes"], payload["seeds"],
                      payload["ablation"]["classes"], payload["ablation"]["seeds"], payload["ablation"]["combos"], png,
                      [(p["load_average"]["before"], p["load_average"]["after"]) for p in parts], payload["quick"],
                      out_dir, notes)
    if not payload["complete"]:
        markdown = "**Partial results: at least one merged run was stopped early.**\n\n" + markdown
    write_results(NAME, payload, markdown, out_dir=out_dir)
    return payload


# ============================================================================ main
def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m bench {NAME}", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits class 3 seed 0 + tiny BERT (smoke test)")
    p.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--ablation-classes", default="0,6", help="classes of the poison × label ablation ('' = none)")
    p.add_argument("--ablation-seeds", default="0")
    p.add_argument("--report-class", type=int, default=0, help="class whose concept report is drawn (first seed)")
    p.add_argument("--no-text", action="store_true")
    p.add_argument("--no-images", action="store_true")
    p.add_argument("--text-seed", type=int, default=0)
    p.add_argument("--out-dir", default=None)
    p.add_argument("--merge", nargs="+", default=None, metavar="RUN.json",
                   help="combine the JSON results of earlier runs (e.g. one process per seed) instead of running")
    return p.parse_args(argv)


def ints(text: str | None) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()] if text else []


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv or [])
    if args.merge:
        return merge([Path(f) for f in args.merge], Path(args.out_dir) if args.out_dir else OUT_DIR, argv or [])
    if args.quick and not args.out_dir:
        raise SystemExit("--quick numbers mean nothing: pass --out-dir (the published results stay as they are)")
    out_dir = Path(args.out_dir) if args.out_dir else OUT_DIR
    img_dir = out_dir if args.quick else IMG_DIR
    base = method_settings(NAME, load_params()["unlearn"])
    ds = "digits" if args.quick else "fmnist"
    classes, seeds = ([3], [0]) if args.quick else (ints(args.classes), ints(args.seeds))
    ab_classes, ab_seeds = ([3], [0]) if args.quick else (ints(args.ablation_classes), ints(args.ablation_seeds))
    report_class = 3 if args.quick else args.report_class
    retrain_cfg = refs.schedule(ds, 0, epochs=2) if args.quick else None
    combos = ([("localized", "targeted"), ("none", "keep")] if args.quick else
              [(p, lab) for p in POISON_MODES for lab in LABEL_MODES])
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    ablation: list[dict[str, Any]] = []
    report_png = None
    report_details: dict[str, Any] = {}
    text = None

    def save(done: bool) -> dict[str, Any]:
        """Write the results so far (a long run leaves its finished cases even if stopped)."""
        load_now = os.getloadavg()
        markdown = report(rows, ablation, text, ds, classes, seeds, ab_classes, ab_seeds, combos, report_png,
                          [(load_before, load_now)], args.quick, out_dir)
        if not done:
            markdown = "**Partial results: the run is still going or was stopped.**\n\n" + markdown
        payload = {"quick": args.quick, "complete": done, "dataset": ds, "classes": classes, "seeds": seeds,
                   "ablation": {"classes": ab_classes, "seeds": ab_seeds, "combos": combos}, "params": base,
                   "targets": TARGETS, "rows": rows, "ablation_rows": ablation, "text": text,
                   "load_average": {"before": load_before, "after": load_now}, "argv": argv or [],
                   "concept_report": {k: v for k, v in report_details.items() if k != "examples"},
                   "concept_report_png": str(report_png) if report_png else None}
        write_results(NAME, payload, markdown, out_dir=out_dir)
        return payload

    if not args.no_text:  # first: minutes, while the image part retrains a model per class and seed
        text = text_bench(args.quick, args.text_seed, base)
        if not args.quick:
            save(done=False)
    if not args.no_images:
        store = refs.store(ds)
        for seed in sorted(set(seeds) | set(ab_seeds), key=lambda s_: (s_ not in ab_seeds, s_)):
            original, base_s = refs.base_model(ds, seed)
            print(f"[{NAME}] {ds} seed {seed}: base model ({base_s:.0f} s to train)", flush=True)
            todo = set(classes if seed in seeds else []) | set(ab_classes if seed in ab_seeds else [])
            # the ablation's classes first: a run stopped early still has the ablation
            for cls in sorted(todo, key=lambda c: (not (seed in ab_seeds and c in ab_classes), c)):
                methods = {"concept_poisoning (params.yaml)": base} if seed in seeds and cls in classes else {}
                if seed in ab_seeds and cls in ab_classes:
                    methods.update({f"{p}+{lab}": {**base, "poison": p, "labels": lab} for p, lab in combos})
                rcfg = refs.schedule(ds, seed, epochs=2) if args.quick else retrain_cfg
                # the concept grids hold crops of retained images: drawn into a folder deleted after the case
                with tempfile.TemporaryDirectory(prefix="bench-report-") as scratch:
                    row, details = run_image_case(ds, seed, cls, original, methods, rcfg, scratch)
                    if cls == report_class and not report_details:
                        report_details = details
                        report_png = render_class_report(details, cls, store.classes,
                                                         img_dir / f"{NAME}_class{cls}.png")
                if "concept_poisoning (params.yaml)" in row:
                    rows.append(row)
                    m = row["concept_poisoning (params.yaml)"]
                    print(f"  class {cls}: A_train {m['A_train']:.4f} A_test {m['A_test']:.4f} A_global "
                          f"{m['A_global']:.4f} (orig {row['original']['A_global']:.4f}, retrain "
                          f"{row['retrain']['A_global']:.4f}) Fr {m['Fr']:.3f} {m['seconds']:.1f} s "
                          f"({m['speedup']:.1f}×)", flush=True)
                if any(k in row for k in (f"{p}+{lab}" for p, lab in combos)):
                    ablation.append(row)
                if not args.quick:
                    save(done=False)
    return save(done=True)


def report(rows, ablation, text, ds, classes, seeds, ab_classes, ab_seeds, combos, report_png, loads, quick,
           out_dir, notes: list[str] | None = None) -> str:
    """The Markdown report; `loads` holds (start, end) load averages of each process that ran."""
    name = "concept_poisoning (params.yaml)"
    span = "; ".join(f"{tuple(round(x, 1) for x in a)} → {tuple(round(x, 1) for x in b)}" for a, b in loads)
    lines = [f"What was run: {ds}, classes {classes}, seeds {seeds}" + (" (--quick: numbers mean nothing)" if quick else "")
             + f"; ablation on classes {ab_classes}, seeds {ab_seeds}, {len(combos)} poison × label combinations. "
             "Each class is compared with retraining from scratch without it (same architecture and schedule, "
             f"bench.references), timed in the same process as the method. Load average (1/5/15 min) at the start → "
             f"end of each process: {span}; the machine is shared, so times move with it.", ""] + (notes or [])
    if rows:
        lines += [f"## Images: {ds}, mean ± std over {len(rows)} class × seed runs", "", summary_table(rows, [name]), ""]
        flags = target_flags(rows, name)
        lines += ["Targets on every run:", "", md_table(["target", "met"], [[k, v] for k, v in flags.items()]), ""]
        lines += ["Per class (mean over seeds):", "", per_class_table(rows, name), ""]
    if ablation:
        lines += ["## Ablation: poison mode × label mode", "",
                  f"Classes {ab_classes}, seeds {ab_seeds} (fewer than the main table); other settings from params.yaml.",
                  "", ablation_table(ablation), ""]
    if report_png:
        rel = os.path.relpath(report_png, out_dir)
        lines += ["## Concept report of one class", "", f"![concept report]({rel})", ""]
    if text:
        lines += text_report(text)
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
