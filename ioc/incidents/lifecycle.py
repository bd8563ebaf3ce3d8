"""The incident lifecycle as data: which step moves which status to which, and who may take it.


    new          → dispatched (dispatch)       | closed (close: a duplicate, no real problem)
    dispatched   → accepted (accept)           | rejected (reject, with why) | resolved
    accepted     → in_progress (progress note) | rejected | resolved
    in_progress  → in_progress (progress note) | resolved (resolve, with what was done)
    rejected     → dispatched (dispatch again, possibly to another agency)
                 | closed (close, with a note: no agency's job, nothing to do)
    resolved     → closed (close, or the citizen's rating) | dispatched (reopen)
    closed       → dispatched (reopen)

Beside the steps, an open incident's deadline may be extended once, formally, by the IOC
(:func:`check_extension`: an operator, with the reason; the status stays).

Pure: no database. :mod:`ioc.incidents.store` applies a step and records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    NEW = "new"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REJECTED = "rejected"


OPEN = frozenset(
    {Status.NEW, Status.DISPATCHED, Status.ACCEPTED, Status.IN_PROGRESS, Status.REJECTED}
)
# Statuses an agency can still act on.
AGENCY_ACTIVE = frozenset({Status.DISPATCHED, Status.ACCEPTED, Status.IN_PROGRESS})


class Actor(StrEnum):
    SYSTEM = "system"  # the incident worker (routing, auto-dispatch, overdue)
    OPERATOR = "operator"  # IOC operators and admins
    AGENCY = "agency"  # the responsible agency, through its scoped API
    CITIZEN = "citizen"  # the reporter, through the Open311 feedback extension


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    sources: frozenset[Status]
    target: Status | None  # None: the status stays (a progress note)
    actors: frozenset[Actor]
    needs_note: bool = False
    notes_from: frozenset[Status] = frozenset()  # a note is needed when leaving these


def _step(
    name: str,
    sources: set[Status],
    target: Status | None,
    actors: set[Actor],
    needs_note: bool = False,
    notes_from: set[Status] | None = None,
) -> Step:
    return Step(
        name, frozenset(sources), target, frozenset(actors), needs_note, frozenset(notes_from or ())
    )


_OPS = {Actor.OPERATOR, Actor.SYSTEM}
STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        _step("dispatch", {Status.NEW, Status.REJECTED}, Status.DISPATCHED, _OPS),
        _step("accept", {Status.DISPATCHED}, Status.ACCEPTED, {Actor.AGENCY, Actor.OPERATOR}),
        _step(
            "reject", {Status.DISPATCHED, Status.ACCEPTED}, Status.REJECTED, {Actor.AGENCY}, True
        ),
        _step(
            "progress",
            {Status.ACCEPTED, Status.IN_PROGRESS},
            Status.IN_PROGRESS,
            {Actor.AGENCY, Actor.OPERATOR},
            True,
        ),
        _step(
            "resolve",
            {Status.DISPATCHED, Status.ACCEPTED, Status.IN_PROGRESS},
            Status.RESOLVED,
            {Actor.AGENCY, Actor.OPERATOR},
            True,
        ),
        # Operators close a resolved incident, a new one that is no real problem (a duplicate,
        # a prank), or a rejected one no agency should take (saying why); a citizen's rating
        # closes a resolved one.
        _step(
            "close",
            {Status.NEW, Status.RESOLVED, Status.REJECTED},
            Status.CLOSED,
            {Actor.OPERATOR, Actor.CITIZEN},
            notes_from={Status.REJECTED},
        ),
        _step(
            "reopen", {Status.RESOLVED, Status.CLOSED}, Status.DISPATCHED, {Actor.OPERATOR}, True
        ),
    )
}


class StepError(ValueError):
    """A step that does not apply: the message says why (shown to the caller as 409/403)."""

    def __init__(self, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden


def check(step_name: str, current: Status | str, actor: Actor, note: str | None) -> Step:
    """The step if ``actor`` may take it from ``current``; :class:`StepError` otherwise."""
    step = STEPS.get(step_name)
    if step is None:
        raise StepError(f"unknown step {step_name!r}: one of {', '.join(STEPS)}")
    if actor not in step.actors:
        raise StepError(f"{actor.value} may not {step_name} an incident", forbidden=True)
    status = Status(current)
    if status not in step.sources:
        allowed = ", ".join(sorted(s.value for s in step.sources))
        raise StepError(f"cannot {step_name} an incident that is {status.value} (only {allowed})")
    if (step.needs_note or status in step.notes_from) and not (note and note.strip()):
        raise StepError(f"{step_name} needs a note saying why or what was done")
    return step


class ExtensionRefused(StepError):
    """The case already had its one formal extension (answered 409 with when and why)."""

    def __init__(self, message: str, *, extended_at: object, reason: str | None) -> None:
        super().__init__(message)
        self.extended_at = extended_at
        self.reason = reason


def check_extension(
    current: Status | str,
    actor: Actor,
    reason: str | None,
    *,
    extended_at: object,
    previous: str | None,
) -> None:
    """Whether ``actor`` may extend the deadline of an incident that is ``current`` now.

    One formal extension per case: the deadline the citizen was given may be moved once, by the
    IOC, saying why (an agency asks the IOC; the IOC grants it). A second is refused with the
    first one's date and reason, so the caller sees why. A reopened case keeps its extension
    used."""
    if actor not in (Actor.OPERATOR, Actor.SYSTEM):
        raise StepError(f"{actor.value} may not extend a deadline", forbidden=True)
    status = Status(current)
    if status not in OPEN:
        allowed = ", ".join(sorted(s.value for s in OPEN))
        raise StepError(f"cannot extend the deadline of an incident that is {status.value} "
                        f"(only {allowed})")  # fmt: skip
    if extended_at is not None:
        raise ExtensionRefused(
            f"the deadline was already extended once (at {extended_at}, reason: {previous!r}); "
            "a case gets one formal extension",
            extended_at=extended_at,
            reason=previous,
        )
    if not (reason and reason.strip()):
        raise StepError("extend needs a reason")
