"""Canary rollouts and their analyses (what :mod:`registry.rollouts` records).

At most one rollout per name is active (a partial unique index); the rules, the lease
checks and the state machine are :mod:`registry.rollouts`'s, and this module only reads
and writes the rows, logging each write.
"""

from __future__ import annotations

import json
from typing import Any

from registry.records import Analysis, Rollout
from registry.sql_store.core import Row, StoreCore, TxCore


class RolloutReads(StoreCore):
    def active_rollout(self, name: str) -> Rollout | None:
        """The active rollout of adapter ``name`` (at most one), without its analyses."""
        row = self.one("SELECT * FROM rollouts WHERE name = ? AND state = 'active'", (name,))
        return _rollout(row, ()) if row else None

    def rollout(self, rollout_id: int) -> Rollout | None:
        """One rollout, with every analysis recorded for it."""
        row = self.one("SELECT * FROM rollouts WHERE id = ?", (rollout_id,))
        return _rollout(row, tuple(self.analyses(rollout_id))) if row else None

    def rollouts(self, name: str) -> list[Rollout]:
        """Every rollout of ``name``, oldest first, with their analyses."""
        rows = self.all("SELECT * FROM rollouts WHERE name = ? ORDER BY id", (name,))
        return [_rollout(r, tuple(self.analyses(int(r["id"])))) for r in rows]

    def analyses(self, rollout_id: int) -> list[Analysis]:
        rows = self.all(
            "SELECT * FROM rollout_analyses WHERE rollout_id = ? ORDER BY id", (rollout_id,)
        )
        return [
            Analysis(
                id=int(r["id"]),
                at=r["at"],
                who=r["who"],
                step=int(r["step"]),
                weight=float(r["weight"]),
                verdict=r["verdict"],
                reason=r["reason"],
                figures=json.loads(r["figures"]),
            )
            for r in rows
        ]


class RolloutWrites(TxCore):
    def insert_rollout(
        self,
        *,
        name: str,
        stable: int,
        canary: int,
        steps: tuple[float, ...],
        plan: dict[str, Any],
        who: str,
        at: str,
    ) -> int:
        """Record a new active rollout at its first step and log it."""
        row = self.conn.execute(
            "INSERT INTO rollouts (name, stable, canary, steps, plan, step, weight, state,"
            " started_by, started_at, step_started_at) VALUES (?, ?, ?, ?, ?, 0, ?, 'active',"
            " ?, ?, ?) RETURNING id",
            (name, stable, canary, json.dumps(list(steps)), json.dumps(plan, sort_keys=True),
             steps[0], who, at, at),
        ).fetchone()  # fmt: skip
        rollout_id = int(row[0])
        self.event(
            at=at,
            who=who,
            action="rollout.start",
            name=name,
            version=canary,
            detail={"rollout": rollout_id, "stable": stable, "steps": list(steps),
                    "weight": steps[0], "plan": plan},
        )  # fmt: skip
        return rollout_id

    def move_rollout(
        self, *, rollout: Rollout, step: int, weight: float, reason: str, who: str, at: str
    ) -> None:
        """Set an active rollout's step and canary weight, and log it."""
        self.conn.execute(
            "UPDATE rollouts SET step = ?, weight = ?, step_started_at = ? WHERE id = ?",
            (step, weight, at, rollout.id),
        )
        self.event(
            at=at,
            who=who,
            action="rollout.step",
            name=rollout.name,
            version=rollout.canary,
            detail={"rollout": rollout.id, "step": step, "from": rollout.weight,
                    "weight": weight, "reason": reason},
        )  # fmt: skip

    def insert_analysis(
        self,
        *,
        rollout: Rollout,
        verdict: str,
        reason: str,
        figures: dict[str, Any],
        who: str,
        at: str,
    ) -> None:
        """Record one judgement of the rollout's current step, and log it."""
        self.conn.execute(
            "INSERT INTO rollout_analyses (rollout_id, at, who, step, weight, verdict, reason,"
            " figures) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (rollout.id, at, who, rollout.step, rollout.weight, verdict, reason,
             json.dumps(figures, sort_keys=True)),
        )  # fmt: skip
        self.event(
            at=at,
            who=who,
            action="rollout.analysis",
            name=rollout.name,
            version=rollout.canary,
            detail={"rollout": rollout.id, "step": rollout.step, "weight": rollout.weight,
                    "verdict": verdict, "reason": reason, "figures": figures},
        )  # fmt: skip

    def end_rollout(self, *, rollout: Rollout, state: str, reason: str, who: str, at: str) -> None:
        """End an active rollout (its canary weight drops to 0) and log why."""
        self.conn.execute(
            "UPDATE rollouts SET state = ?, weight = 0, reason = ?, ended_at = ?, holder = NULL,"
            " lease_until = NULL WHERE id = ?",
            (state, reason, at, rollout.id),
        )
        self.event(
            at=at,
            who=who,
            action=f"rollout.{state}",
            name=rollout.name,
            version=rollout.canary,
            detail={"rollout": rollout.id, "stable": rollout.stable, "step": rollout.step,
                    "weight": rollout.weight, "reason": reason},
        )  # fmt: skip

    def set_lease(self, *, rollout: Rollout, holder: str | None, until: float | None) -> bool:
        """Give the rollout's lease to ``holder`` until ``until`` (epoch s). True when the
        holder changed (the caller logs that; a renewal is not an event)."""
        self.conn.execute(
            "UPDATE rollouts SET holder = ?, lease_until = ? WHERE id = ?",
            (holder, until, rollout.id),
        )
        return holder != rollout.holder


def _rollout(row: Row, analyses: tuple[Analysis, ...]) -> Rollout:
    return Rollout(
        id=int(row["id"]),
        name=row["name"],
        stable=int(row["stable"]),
        canary=int(row["canary"]),
        steps=tuple(float(w) for w in json.loads(row["steps"])),
        plan=json.loads(row["plan"]),
        step=int(row["step"]),
        weight=float(row["weight"]),
        state=row["state"],
        reason=row["reason"],
        started_by=row["started_by"],
        started_at=row["started_at"],
        step_started_at=row["step_started_at"],
        ended_at=row["ended_at"],
        holder=row["holder"],
        lease_until=None if row["lease_until"] is None else float(row["lease_until"]),
        analyses=analyses,
    )
