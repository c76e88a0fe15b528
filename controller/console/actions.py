"""Operator actions from the console, through the same path as a signed command.

Each action becomes a command (``controller.operator.build_command``), signed with a
key that lives only in this process and that only this path's verifier accepts, and is
then decided by a :class:`~controller.channel.CommandChannel`: the same validation
(targets, ranges, ratings, sheddable capacity), the same replay window, the same audit
table (source ``console:<user>``) and the same control-loop inbox as a command that
came over MQTT. Acknowledging an alarm changes no device: it is recorded in the audit
table and in the console's alarm log.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.channel import CommandChannel
from controller.commands import Verifier, sign_hmac
from controller.operator import build_command
from controller.topics import Topics

if TYPE_CHECKING:
    from controller.app import App
    from controller.console.alarms import AlarmLog

#: How long a console command stays valid (it is decided at once).
LIFETIME_S = 60.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision: ``status`` accepted, rejected or duplicate; ``reason`` why."""

    status: str
    reason: str
    command_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "accepted"


class OperatorActions:
    def __init__(self, app: App, alarms: AlarmLog, clock: Callable[[], float]) -> None:
        assert app.store is not None
        self._key = secrets.token_bytes(32)
        self.app, self.alarms, self.clock = app, alarms, clock
        self.channel = CommandChannel(
            app.site, app.store, app.topics or Topics(app.settings.topic_prefix), app.inbox,
            Verifier(self._key), app.gateway.capability, app.stats, clock=clock)

    async def command(self, user: str, command_type: str, target: str,
                      params: dict[str, Any]) -> Outcome:
        """Decide one command on behalf of ``user``. Raises StoreWriteError (OSError)."""
        command = sign_hmac(build_command(command_type, target=target, params=params,
                                          lifetime_s=LIFETIME_S, now_s=self.clock()),
                            self._key)
        payload = json.dumps(command).encode()
        replies = await asyncio.to_thread(self.channel.handle, payload,
                                          source=f"console:{user}")
        body = replies[0].body if replies else {}
        assert isinstance(body, dict)
        status = str(body.get("status", "rejected"))
        reason = str(body.get("reason", "queued for the control loop" if status == "accepted"
                                      else ""))
        return Outcome(status, reason,
                       command["id"])

    async def shed(self, user: str, kw: float, duration_s: float) -> Outcome:
        return await self.command(user, "shed", "site", {"kw": kw, "duration_s": duration_s})

    async def release(self, user: str, command_id: str) -> Outcome:
        """End a running or scheduled event early (a ``cancel`` of its command id)."""
        return await self.command(user, "cancel", "site", {"command_id": command_id})

    async def sg_ready(self, user: str, heat_pump: str, state: int,
                       duration_s: float) -> Outcome:
        return await self.command(user, "sg_ready", heat_pump,
                                  {"state": state, "duration_s": duration_s})

    async def acknowledge(self, user: str, alarm_id: int) -> Outcome:
        alarm = self.alarms.acknowledge(alarm_id, user, self.clock())
        if alarm is None:
            return Outcome("rejected", f"no open alarm {alarm_id}")
        assert self.app.store is not None
        await asyncio.to_thread(
            self.app.store.audit, command_id=f"alarm-{alarm_id}", command_type="ack_alarm",
            source=f"console:{user}", result="accepted",
            reason=f"{alarm.device}: {alarm.text}", payload=json.dumps({"alarm": alarm_id}))
        return Outcome("accepted", "acknowledged")
