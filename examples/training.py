"""Tokenising chat records with loss masks, and one small deterministic training loop."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class Schedule:
    steps: int
    lr: float
    batch_size: int
    warmup: int
    seed: int
    weight_decay: float = 0.0


def set_determinism(seed: int, threads: int = 2) -> None:
    """Same seed, same threads, same CPU kernels: the same weights, byte for byte."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    torch.use_deterministic_algorithms(True)


def render(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], prompt: bool = False
) -> list[int]:
    """Token ids of ``messages`` through the chat template (no extra special tokens)."""
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=prompt
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], assistant_only: bool
) -> Example:
    """Ids of a user/assistant pair; labels cover the answer and its end token (or all)."""
    full = render(tokenizer, messages)
    if not assistant_only:
        return Example(full, list(full))
    prompt = render(tokenizer, messages[:-1], prompt=True)
    if full[: len(prompt)] != prompt:
        raise ValueError("prompt tokens are not a prefix of the conversation's tokens")
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    answer_end = full.index(end_id, len(prompt)) + 1
    labels = [IGNORE] * len(prompt) + full[len(prompt) : answer_end]
    labels += [IGNORE] * (len(full) - answer_end)
    return Example(full, labels)


def collate(batch: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in batch]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


def lr_at(step: int, s: Schedule) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batches(examples: Sequence[Example], s: Schedule) -> list[list[Example]]:
    """Deterministic epochs of shuffled batches, enough for ``s.steps`` steps."""
    rng = random.Random(s.seed)
    out: list[list[Example]] = []
    while len(out) < s.steps:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for i in range(0, len(order) - s.batch_size + 1, s.batch_size):
            out.append([examples[j] for j in order[i : i + s.batch_size]])
    return out[: s.steps]


def train(
    model: torch.nn.Module,
    examples: Sequence[Example],
    s: Schedule,
    pad_id: int,
    label: str,
    log_every: int = 25,
) -> float:
    """Train in place with AdamW; returns the mean loss of the last ``log_every`` steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))
    model.train()
    start, recent = time.monotonic(), []
    for step, batch in enumerate(batches(examples, s)):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, s)
        loss = model(**collate(batch, pad_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        recent = [*recent[-(log_every - 1) :], loss.item()]
        if (step + 1) % log_every == 0 or step + 1 == s.steps:
            print(
                f"  [{label}] step {step + 1}/{s.steps} loss {sum(recent) / len(recent):.4f} "
                f"({time.monotonic() - start:.0f}s)",
                flush=True,
            )
    model.eval()
    return sum(recent) / len(recent)
