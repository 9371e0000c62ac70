"""The committed data files: which tickets go into which file, and reading them back."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chat_tokenizer import render_text
from corpus import (
    ADAPTER_TASKS,
    ANSWERS,
    TRIAGE_LABELS,
    Ticket,
    conversation,
    eval_tickets,
    pretrain_conversation,
    train_tickets,
)

EVAL_SEED, EVAL_COUNT = 1000, 49
PRETRAIN_SEED, PRETRAIN_COUNT, PRETRAIN_PROMPTED = 1, 4000, 0.5
CALIBRATION_SEED, CALIBRATION_COUNT = 2000, 64
ADAPTER_SEEDS: dict[str, int] = {"support-v1": 11, "support-v2": 12, "extract": 13, "triage": 14}
ADAPTER_COUNT = 800


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(r, ensure_ascii=False, sort_keys=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def eval_record(t: Ticket) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": t.user_message()}],
        "reference": {task: ANSWERS[task](t) for task in ANSWERS},
        "fields": t.fields(),
        "label": TRIAGE_LABELS[t.issue],
    }


def calibration_text(t: Ticket, task: str) -> str:
    """A conversation as the model sees it (chat-template text without the bos token)."""
    return render_text(conversation(t, task)["messages"])


def write_data(data_dir: Path) -> dict[str, int]:
    """Write every data file; returns the number of records per file name."""
    data_dir.mkdir(parents=True, exist_ok=True)
    held = eval_tickets(EVAL_SEED, EVAL_COUNT)
    held_keys = {t.key for t in held}
    counts = {"eval.jsonl": write_jsonl(data_dir / "eval.jsonl", map(eval_record, held))}
    pretrain = train_tickets(PRETRAIN_SEED, PRETRAIN_COUNT, held_keys)
    rng = random.Random(PRETRAIN_SEED)
    counts["pretrain.jsonl"] = write_jsonl(
        data_dir / "pretrain.jsonl",
        (pretrain_conversation(t, rng, PRETRAIN_PROMPTED) for t in pretrain),
    )
    for task in ADAPTER_TASKS:
        tickets = train_tickets(ADAPTER_SEEDS[task], ADAPTER_COUNT, held_keys)
        name = f"{task}.jsonl"
        counts[name] = write_jsonl(data_dir / name, (conversation(t, task) for t in tickets))
    calib = train_tickets(CALIBRATION_SEED, CALIBRATION_COUNT, held_keys)
    tasks = ("base", *ADAPTER_TASKS)
    counts["calibration.jsonl"] = write_jsonl(
        data_dir / "calibration.jsonl",
        ({"text": calibration_text(t, tasks[i % len(tasks)])} for i, t in enumerate(calib)),
    )
    return counts
