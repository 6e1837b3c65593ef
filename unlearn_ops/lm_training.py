"""Training loops for causal LMs (`CausalLM`): the build's fine-tune, retraining, and the shared
machinery of the LM unlearning methods.

Everything trains only the model's top `trainable_blocks` blocks (+ final norm, + head when
untied), and the frozen prefix's output is computed **once per text** (`TextSet`) instead of once
per step: each step then costs the top blocks plus the LM head at answer positions. The loss is the
token-mean negative log-likelihood of the answer tokens (prompt tokens are never scored), the same
objective as TOFU fine-tuning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from unlearn_ops.models.lm import (
    CausalLM,
    Encoded,
    answer_logprobs,
    encode_qa,
    encode_text,
    freeze_all_but_top,
    prefix_states,
)
from unlearn_ops.progress import track
from unlearn_ops.utils import resolve_device, seed_everything


@dataclass(frozen=True)
class LMTrainConfig:
    epochs: int = 12            # passes over the QA pairs (enough to memorise the facts with 2 top blocks)
    lr: float = 1e-3            # AdamW learning rate of the trainable blocks
    batch_size: int = 8         # QA pairs per step
    weight_decay: float = 0.0   # AdamW weight decay
    max_len: int = 64           # tokens per QA pair (prompt + answer + EOS); longer answers are cut
    grad_clip: float = 1.0      # max gradient norm per step
    train_head: bool = False    # also train the LM head (untied from the embeddings first)
    seed: int = 0               # data order
    device: str = "auto"        # auto = CUDA when present
    lr_decay: str = "none"      # none | linear (to 0 at the last step: the end point depends less on the last batches)
    general_texts: int = 0      # plot summaries (general English, no data subject) mixed into every epoch

    def __post_init__(self) -> None:
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {LR_DECAYS}, not {self.lr_decay!r}")
        if self.general_texts < 0:
            raise ValueError(f"general_texts must be >= 0, not {self.general_texts}")


LR_DECAYS = ("none", "linear")


class TextSet:
    """Tokenised QA pairs and their frozen-prefix states, computed lazily and once per sample.

    Lazy because a method that draws a few retain anchors should not pay for the prefix of the
    whole retain set.
    """

    def __init__(self, model: CausalLM, enc: Encoded) -> None:
        self.model, self.enc = model, enc
        self.states: list[torch.Tensor | None] = [None] * len(enc)

    def __len__(self) -> int:
        return len(self.enc)

    def take(self, index: Sequence[int]) -> tuple[Encoded, list[torch.Tensor]]:
        index = list(index)
        missing = sorted({i for i in index if self.states[i] is None})
        if missing:
            for i, s in zip(missing, prefix_states(self.model, self.enc.subset(missing)), strict=True):
                self.states[i] = s
        return self.enc.subset(index), [self.states[i] for i in index]

    def all_states(self) -> list[torch.Tensor]:
        return self.take(range(len(self)))[1]


def text_set(model: CausalLM, texts: Sequence[str], max_len: int = 64) -> TextSet:
    return TextSet(model, encode_qa(model.tokenizer, texts, max_len))


def general_corpus(n: int) -> list[str]:
    """`n` plot summaries, always the same ones for the same n (a fixed shuffle, not the training
    seed): the build and every retrain of it train on the same general text."""
    from unlearn_ops.data.sources import rt_plot_summaries

    plots = rt_plot_summaries()
    if n > len(plots):
        raise ValueError(f"general_texts={n}: the corpus has {len(plots)} plot summaries")
    order = torch.randperm(len(plots), generator=torch.Generator().manual_seed(0))[:n]
    return [plots[i] for i in sorted(order.tolist())]


def training_set(model: CausalLM, texts: Sequence[str], cfg: LMTrainConfig) -> TextSet:
    """The QA pairs (answers scored) plus `cfg.general_texts` plot summaries (every token scored)."""
    enc = encode_qa(model.tokenizer, texts, cfg.max_len)
    if cfg.general_texts:
        general = encode_text(model.tokenizer, general_corpus(cfg.general_texts), cfg.max_len)
        enc = Encoded(enc.ids + general.ids, enc.start + general.start)
    return TextSet(model, enc)


def trainable_copy(model: CausalLM, seed: int, device: str) -> CausalLM:
    """The LM methods' starting point: a seeded deep copy on `device` whose top blocks alone learn."""
    from unlearn_ops.methods.base import fresh_copy  # lazy: methods import this module
    from unlearn_ops.models.lm import freeze_all_but_top
    from unlearn_ops.utils import resolve_device, seed_everything

    seed_everything(seed)
    new = fresh_copy(model).to(resolve_device(device))
    freeze_all_but_top(new, new.train_head)
    return new


def batch_order(n: int, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """One shuffled epoch of index batches (the last one may be short)."""
    perm = torch.randperm(n, generator=generator).tolist()
    for lo in range(0, n, batch_size):
        yield perm[lo: lo + batch_size]


class Cycler:
    """Endless seeded batches from a set (retain anchors drawn alongside forget batches)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self._it: Iterator[list[int]] = iter(())

    def next(self) -> list[int]:
        batch = next(self._it, None)
        if batch is None:
            self._it = batch_order(self.n, self.batch_size, self.gen)
            batch = next(self._it)
        return batch


def mean_nll(model: CausalLM, data: TextSet, index: Sequence[int]) -> torch.Tensor:
    """Token-mean negative log-likelihood of the answers of `index` (differentiable)."""
    enc, states = data.take(index)
    sums, counts = answer_logprobs(model, enc, states)
    return -sums.sum() / counts.sum().clamp(min=1)


def sequence_logprob(model: CausalLM, data: TextSet, index: Sequence[int]) -> torch.Tensor:
    """Summed answer log-probability per sample (NPO's log π(y|x))."""
    enc, states = data.take(index)
    return answer_logprobs(model, enc, states)[0]


def optimizer_for(model: CausalLM, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    params = model.trainable_parameters()
    if not params:
        raise ValueError("the model has no trainable parameters (call freeze_all_but_top first)")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def step(model: CausalLM, opt: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), grad_clip)
    opt.step()
    return float(loss.detach())


def fit_lm(model: CausalLM, texts: Sequence[str], cfg: LMTrainConfig,
           progress: Callable[[str], None] | None = None) -> CausalLM:
    """Fine-tune the top blocks on QA strings and `cfg.general_texts` plot summaries (in place);
    returns the model in eval mode."""
    device = resolve_device(cfg.device)
    model.to(device)
    freeze_all_but_top(model, cfg.train_head)
    seed_everything(cfg.seed)
    start = time.perf_counter()
    data = training_set(model, texts, cfg)
    opt = optimizer_for(model, cfg.lr, cfg.weight_decay)
    total = cfg.epochs * steps_per_epoch(len(data), cfg.batch_size)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / total if cfg.lr_decay == "linear" else 1.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    with track("fine-tuning", total) as bar:
        for epoch in range(cfg.epochs):
            losses = []
            for idx in batch_order(len(data), cfg.batch_size, gen):
                losses.append(step(model, opt, mean_nll(model, data, idx), cfg.grad_clip))
                decay.step()
                bar.advance(epoch=f"{epoch + 1}/{cfg.epochs}", loss=round(losses[-1], 4))
            line = f"epoch {epoch + 1}/{cfg.epochs} loss {sum(losses) / len(losses):.4f} " \
                   f"({time.perf_counter() - start:.0f} s)"
            bar.note(line)
            if progress:
                progress(line)
    return model.eval()


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))




def unlearning_loop(model: CausalLM, n_forget: int, loss_fn: Callable[[list[int], list[int] | None], torch.Tensor], *,
                    epochs: int, batch_size: int, lr: float, grad_clip: float, seed: int,
                    n_retain: int = 0, retain_batch_size: int = 0) -> list[str]:
    """The loop every LM unlearning method shares: `epochs` shuffled passes over the forget set;
    each step also draws a retain batch when `retain_batch_size` > 0. `loss_fn(forget_idx,
    retain_idx)` returns the method's loss. Returns one log line per epoch."""
    opt = optimizer_for(model, lr)
    gen = torch.Generator().manual_seed(seed)
    anchors = Cycler(n_retain, retain_batch_size, seed + 1) if retain_batch_size > 0 and n_retain > 0 else None
    logs = []
    model.train()
    with track("unlearning", epochs * steps_per_epoch(n_forget, batch_size)) as bar:
        for epoch in range(epochs):
            losses = []
            for idx in batch_order(n_forget, batch_size, gen):
                losses.append(step(model, opt, loss_fn(idx, anchors.next() if anchors else None), grad_clip))
                bar.advance(epoch=f"{epoch + 1}/{epochs}")
            logs.append(f"epoch {epoch + 1}/{epochs}: loss {sum(losses) / len(losses):.4f}")
            bar.note(logs[-1])
    model.eval()
    return logs


__all__ = ["Cycler", "LMTrainConfig", "TextSet", "batch_order", "fit_lm", "general_corpus", "mean_nll", "optimizer_for",
           "sequence_logprob", "step", "steps_per_epoch", "text_set", "training_set", "unlearning_loop"]
