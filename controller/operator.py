"""``pedf command``: build, sign and (optionally) send a demand-response command, playing
the utility or VPP operator. Meant for trials and tests; production operators sign with
their own systems (same canonical form, see docs/mqtt.md)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from controller.commands import sign_ed25519, sign_hmac
from controller.config import UplinkSettings
from controller.topics import Topics


def build_command(command_type: str, *, target: str = "site", params: dict[str, Any],
                  lifetime_s: float, command_id: str | None = None,
                  now_s: float | None = None) -> dict[str, Any]:
    now = time.time() if now_s is None else now_s
    return {
        "id": command_id or f"cmd-{uuid.uuid4().hex[:12]}",
        "type": command_type,
        "target": target,
        "issued_at": round(now, 3),
        "expires_at": round(now + lifetime_s, 3),
        "params": params,
    }


def sign(command: dict[str, Any], settings: UplinkSettings,
         ed25519_private_key: Path | None = None) -> dict[str, Any]:
    if ed25519_private_key is not None:
        return sign_ed25519(command, ed25519_private_key.read_bytes())
    if settings.hmac_key is None:
        raise ValueError("the site file has no [uplink.commands] hmac_key (or "
                         "hmac_key_file); pass --ed25519-key to sign with a private key")
    return sign_hmac(command, settings.hmac_key)


async def send(command: dict[str, Any], settings: UplinkSettings, host: str, port: int,
               timeout_s: float = 10.0) -> dict[str, Any]:
    """Publish ``command`` to the gateway's command topic and wait for its reply."""
    import aiomqtt

    topics = Topics(settings.topic_prefix)
    replies = topics.replies
    async with aiomqtt.Client(host, port, identifier=f"pedf-operator-{uuid.uuid4().hex[:8]}",
                              protocol=aiomqtt.ProtocolVersion.V311,
                              username=settings.username, password=settings.password,
                              timeout=timeout_s) as client:
        await client.subscribe(replies, qos=1)
        await client.publish(topics.commands, json.dumps(command).encode(), qos=1)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray):
                    continue
                reply: dict[str, Any] = json.loads(payload)
                if reply.get("command_id") == command["id"]:
                    return reply
    raise TimeoutError  # pragma: no cover - the timeout above raises first
