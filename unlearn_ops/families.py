"""Model families: the one place that says, for each kind of served model, how it is loaded and
saved, which production metrics verify it, which params.yaml section holds its gates, and what
its certificate pictures. params.yaml `models.<name>.family` names the family of a served model.

How a family is served by MLflow (pyfunc code, pip requirements) is tasks/families.py, keyed by
the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.data.store import SampleStore
from unlearn_ops.models import LM_ARCH, load_model, save_model
from unlearn_ops.models.sharded import load_classifier, save_classifier
from unlearn_ops.progress import track
from unlearn_ops.training import cached_predictions
from unlearn_ops.verify import production as p

Loader = Callable[..., tuple[nn.Module, dict[str, Any]]]  # (directory, device="cpu")
Saver = Callable[[nn.Module, dict[str, Any], str | Path], Path]


@dataclass(frozen=True)
class Family:
    name: str
    gate_section: str                                            # params.yaml section of its gates
    load: Loader
    save: Saver
    prepare: Callable[[p.Evaluation], p.Evaluation]              # the data as its metrics take it
    metrics: Callable[[p.Evaluation], p.Metrics]
    report: Callable[[p.Evaluation, Path], dict[str, Path]]      # the PNGs beside the certificate
    samples_retain: bool = False                                 # `prepare` keeps a sample of the retain set

    def splits(self, store: SampleStore, forget_ids: Sequence[str], settings: p.Settings) -> Splits:
        """The store's splits as a verification of `forget_ids` reads them. A classifier reports its
        retain accuracy on a seeded sample (never gated): only that sample is loaded, not the whole
        retain set (the same samples `prepare` would keep, so the same metrics)."""
        retain = None
        if self.samples_retain:
            forget = set(forget_ids)
            retain = p.reported_retain_ids([i for i in store.active_ids() if i not in forget], settings)
        return store.splits(forget_ids, retain_ids=retain)

    def measure(self, e: p.Evaluation) -> p.Metrics:
        """The candidate's production metrics, without verdicts or report (the power check's cost)."""
        with cached_predictions():
            return self.metrics(self.prepare(e))

    def verify(self, e: p.Evaluation, gates: Mapping[str, Mapping[str, Any]], kinds: Sequence[str], *,
               exact: bool, report_dir: str | Path) -> p.Verification:
        """Measure the candidate, judge every request kind by its gates, draw the report."""
        with track("verification", 3, "phase") as bar, cached_predictions():
            e = self.prepare(e)
            bar.advance(phase="metrics")
            metrics = self.metrics(e)
            verdicts = p.judge(metrics, gates, kinds, exact)
            bar.advance(phase="report")
            bar.note("gates: " + ", ".join(f"{k} {'passed' if v['passed'] else 'failed'}" for k, v in verdicts.items()))
            reports = self.report(e, Path(report_dir))
            bar.advance(phase="done")
        return p.Verification(all(v["passed"] for v in verdicts.values()), metrics, verdicts, reports)


def _load_lm(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    from unlearn_ops.models.lm import load_lm  # lazy: transformers is slow to import

    return load_lm(directory, device), {"arch": LM_ARCH}


def _save_lm(model: nn.Module, spec: dict[str, Any], directory: str | Path) -> Path:
    from unlearn_ops.models.lm import save_lm

    return save_lm(model, directory)  # save_pretrained + tokenizer: the spec is in the folder itself


def _as_is(e: p.Evaluation) -> p.Evaluation:
    return e


FAMILIES: dict[str, Family] = {f.name: f for f in (
    # a sharded classifier (spec arch `sharded`) is a classifier: its shard map and checkpoints travel with it
    Family("classifier", "gates", load_classifier, save_classifier, p.sampled_retain, p.classifier_metrics,
           p.classifier_report, samples_retain=True),
    Family("text", "text_gates", load_model, save_model, p.tokenized, p.classifier_metrics, p.classifier_report,
           samples_retain=True),
    Family("gan", "gan_gates", load_model, save_model, _as_is, p.gan_metrics, p.gan_report),
    Family("lm", "lm_gates", _load_lm, _save_lm, _as_is, p.lm_metrics, p.no_report),
)}
DEFAULT = "classifier"


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; one of {sorted(FAMILIES)}")
    return FAMILIES[name]
