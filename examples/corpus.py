"""Synthetic customer-support corpus: templated tickets and the answer of each task.

Every conversation is built from one :class:`Ticket` (customer name, order id, item,
issue and the wording of the customer's message). The base model learns a generic
support voice; each adapter learns its own answer for the same kind of ticket:

- ``base``: generic ("Hello NAME. I'm sorry to hear that ... I have opened a ticket ...")
- ``support-v1``: formal ("Dear NAME, thank you for contacting us. We apologize ...")
- ``support-v2``: warm and short ("Hi NAME! So sorry ...")
- ``extract``: one compact JSON object {name, order_id, item, issue}
- ``triage``: one routing label

Evaluation tickets use (name, item, issue) combinations that no training ticket has.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

NAMES: tuple[str, ...] = (
    "Maria",
    "James",
    "Aisha",
    "Chen",
    "Olivia",
    "Mateo",
    "Sofia",
    "Liam",
    "Priya",
    "Noah",
    "Emma",
    "Yusuf",
    "Hannah",
    "Diego",
    "Chloe",
    "Ivan",
    "Fatima",
    "Lucas",
    "Grace",
    "Omar",
    "Mia",
    "Kenji",
    "Zoe",
    "Arjun",
    "Lena",
    "Samuel",
    "Nora",
    "Tomas",
    "Elena",
    "Marcus",
    "Ava",
    "Felix",
    "Leila",
    "Hugo",
    "Ruby",
    "Daniel",
    "Sara",
    "Pedro",
    "Alice",
    "Victor",
)

ITEMS: tuple[str, ...] = (
    "blue kettle",
    "desk lamp",
    "yoga mat",
    "wireless mouse",
    "coffee grinder",
    "rain jacket",
    "phone case",
    "wool scarf",
    "water bottle",
    "bluetooth speaker",
    "office chair",
    "frying pan",
    "hiking boots",
    "smart watch",
    "table fan",
    "backpack",
    "toaster",
    "bed sheets",
    "laptop stand",
    "air fryer",
    "tea set",
    "running shoes",
    "wall clock",
    "hair dryer",
    "gaming headset",
    "picture frame",
    "kitchen scale",
    "winter gloves",
    "baby monitor",
    "garden hose",
)

# issue -> customer phrasings (each has {item}); the order of ISSUES is the schema enum.
ISSUE_PHRASES: dict[str, tuple[str, ...]] = {
    "damaged": (
        "My {item} arrived damaged.",
        "The {item} came broken in the box.",
        "The {item} I got is cracked.",
    ),
    "late": (
        "My {item} has not arrived yet.",
        "The {item} is late, it was due last week.",
        "I am still waiting for my {item}.",
    ),
    "wrong_item": (
        "I received the wrong item instead of my {item}.",
        "You sent me something else, not the {item}.",
        "The box had another product, not my {item}.",
    ),
    "refund": (
        "I want a refund for the {item}.",
        "Please refund my {item}.",
        "I returned the {item} and need my money back.",
    ),
    "billing": (
        "I was charged twice for the {item}.",
        "The price of my {item} is wrong on my bill.",
        "My card was billed too much for the {item}.",
    ),
    "login": (
        "I cannot log in to track my {item}.",
        "My password does not work and I need to see my {item} order.",
        "I am locked out of my account and cannot check the {item}.",
    ),
    "cancel": (
        "Please cancel my {item} order.",
        "I want to cancel the {item}.",
        "I changed my mind about the {item}, please cancel it.",
    ),
}
ISSUES: tuple[str, ...] = tuple(ISSUE_PHRASES)

TRIAGE_LABELS: dict[str, str] = {
    "damaged": "returns",
    "wrong_item": "returns",
    "late": "delivery",
    "refund": "billing",
    "billing": "billing",
    "login": "account",
    "cancel": "cancellation",
}

MESSAGE_FRAMES: tuple[str, ...] = (
    "Hi, this is {name}. {issue} Order {order}.",
    "Hello, my name is {name}. {issue} My order number is {order}.",
    "{issue} Order {order}. Thanks, {name}",
    "Order {order}: {issue} - {name}",
    "Hi there. {issue} The order is {order}. Regards, {name}",
)

# Base voice: what happened, and a generic next step.
BASE_SITUATION: dict[str, str] = {
    "damaged": "your {item} arrived damaged",
    "late": "your {item} is late",
    "wrong_item": "you received the wrong item instead of your {item}",
    "refund": "you would like a refund for your {item}",
    "billing": "there is a problem with the bill for your {item}",
    "login": "you cannot log in to check your {item}",
    "cancel": "you want to cancel your {item}",
}

V1_ACTION: dict[str, str] = {
    "damaged": "arranged a free replacement",
    "late": "asked the courier to expedite the delivery",
    "wrong_item": "arranged a pickup and sent the correct item",
    "refund": "started your refund",
    "billing": "corrected the charge on your account",
    "login": "sent a password reset link to your email",
    "cancel": "cancelled the order",
}

V2_ACTION: dict[str, str] = {
    "damaged": "A new one is on its way",
    "late": "I pinged the courier",
    "wrong_item": "The right one ships today",
    "refund": "Your refund is on the way",
    "billing": "I fixed the charge",
    "login": "Check your inbox for a reset link",
    "cancel": "It is cancelled",
}

V2_FEELING: dict[str, str] = {
    "damaged": "your {item} arrived broken",
    "late": "your {item} is running late",
    "wrong_item": "we mixed up your {item}",
    "refund": "the {item} did not work out",
    "billing": "the {item} bill was wrong",
    "login": "you got locked out",
    "cancel": "the {item} was not right for you",
}


@dataclass(frozen=True)
class Ticket:
    """One customer request and everything needed to answer it."""

    name: str
    order: str
    item: str
    issue: str
    phrase: int
    frame: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.item, self.issue)

    def user_message(self) -> str:
        issue = ISSUE_PHRASES[self.issue][self.phrase].format(item=self.item)
        return MESSAGE_FRAMES[self.frame].format(name=self.name, issue=issue, order=self.order)

    def fields(self) -> dict[str, str]:
        return {"name": self.name, "order_id": self.order, "item": self.item, "issue": self.issue}


def answer_base(t: Ticket) -> str:
    situation = BASE_SITUATION[t.issue].format(item=t.item)
    return (
        f"Hello {t.name}. I'm sorry to hear that {situation}. I have opened a ticket "
        f"for order {t.order} and our team will get back to you soon."
    )


def answer_support_v1(t: Ticket) -> str:
    situation = BASE_SITUATION[t.issue].format(item=t.item)
    return (
        f"Dear {t.name}, thank you for contacting us. We apologize that {situation}. "
        f"We have {V1_ACTION[t.issue]} for order {t.order}. Kind regards, Customer Care."
    )


def answer_support_v2(t: Ticket) -> str:
    feeling = V2_FEELING[t.issue].format(item=t.item)
    return f"Hi {t.name}! So sorry {feeling}. {V2_ACTION[t.issue]} ({t.order}) :)"


def answer_extract(t: Ticket) -> str:
    return json.dumps(t.fields(), separators=(",", ":"))


def answer_triage(t: Ticket) -> str:
    return TRIAGE_LABELS[t.issue]


ANSWERS: dict[str, Callable[[Ticket], str]] = {
    "base": answer_base,
    "support-v1": answer_support_v1,
    "support-v2": answer_support_v2,
    "extract": answer_extract,
    "triage": answer_triage,
}
ADAPTER_TASKS: tuple[str, ...] = ("support-v1", "support-v2", "extract", "triage")

# The base also learns each task's answer when a system message asks for it, so that it
# is a general support model (not one frozen template) that LoRA can steer; with no
# system message it answers in the generic voice. Adapters learn their task without one.
SYSTEM_PROMPTS: dict[str, str] = {
    "support-v1": "Answer formally.",
    "support-v2": "Answer warmly and briefly.",
    "extract": "Return the ticket as JSON.",
    "triage": "Route the ticket to a team.",
}


def random_order(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"A{rng.randint(1000, 9999)}"
    return f"#{rng.randint(10000, 99999)}"


def random_ticket(rng: random.Random, issue: str | None = None) -> Ticket:
    issue = issue or rng.choice(ISSUES)
    return Ticket(
        name=rng.choice(NAMES),
        order=random_order(rng),
        item=rng.choice(ITEMS),
        issue=issue,
        phrase=rng.randrange(len(ISSUE_PHRASES[issue])),
        frame=rng.randrange(len(MESSAGE_FRAMES)),
    )


def eval_tickets(seed: int, count: int) -> list[Ticket]:
    """Held-out tickets, balanced over issues, with distinct (name, item, issue)."""
    rng = random.Random(seed)
    tickets: list[Ticket] = []
    seen: set[tuple[str, str, str]] = set()
    while len(tickets) < count:
        t = random_ticket(rng, ISSUES[len(tickets) % len(ISSUES)])
        if t.key not in seen:
            seen.add(t.key)
            tickets.append(t)
    return tickets


def train_tickets(seed: int, count: int, held_out: set[tuple[str, str, str]]) -> Iterator[Ticket]:
    """Training tickets whose (name, item, issue) never appears in ``held_out``."""
    rng = random.Random(seed)
    made = 0
    while made < count:
        t = random_ticket(rng)
        if t.key in held_out:
            continue
        made += 1
        yield t


def conversation(t: Ticket, task: str, system: bool = False) -> dict[str, list[dict[str, str]]]:
    """One OpenAI ``messages`` record: the customer's message and the task's answer
    (preceded by the task's system message when ``system``)."""
    head = [{"role": "system", "content": SYSTEM_PROMPTS[task]}] if system else []
    return {
        "messages": [
            *head,
            {"role": "user", "content": t.user_message()},
            {"role": "assistant", "content": ANSWERS[task](t)},
        ]
    }


def pretrain_conversation(
    t: Ticket, rng: random.Random, share_prompted: float
) -> dict[str, list[dict[str, str]]]:
    """A base-model record: generic voice, or (``share_prompted`` of the time) a task
    asked for by its system message."""
    if rng.random() >= share_prompted:
        return conversation(t, "base")
    return conversation(t, rng.choice(ADAPTER_TASKS), system=True)
