"""Demand-response commands: schema, signatures, validation. Pure: no I/O.

A command is a JSON object (see ``docs/mqtt.md``)::

    {"id": "dr-0042", "type": "shed", "target": "site",
     "issued_at": 1795400000.0, "expires_at": 1795400900.0,
     "params": {"kw": 40.0, "duration_s": 900},
     "signature": {"alg": "hmac-sha256", "value": "<hex>"}}

The signature covers the canonical form of every other field: UTF-8 JSON with sorted
keys and no whitespace. ``alg`` is ``hmac-sha256`` (a per-site secret key) or ``ed25519``
(the operator's key pair; the gateway holds the public key). Validation rejects, with a
reason naming the field: oversized payloads, invalid JSON, NaN/inf, unknown or missing
fields, wrong types, out-of-range values, values above a device's rating, unknown
devices or loads, bad signatures, expired commands and issue times in the future beyond
the allowed clock skew. Replays (a known id) are the caller's to check against the
persistent seen-id window (:class:`~controller.store.Store`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.site import SiteSpec

__all__ = [
    "COMMAND_TYPES",
    "MAX_PAYLOAD_BYTES",
    "Command",
    "CommandRejectedError",
    "Decision",
    "Verifier",
    "canonical",
    "decide",
    "digest",
    "sign_hmac",
    "validate",
]

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_DURATION_S = 86_400.0
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_TOP_FIELDS = {"id", "type", "target", "issued_at", "expires_at", "params", "signature"}


class CommandRejectedError(ValueError):
    """The command is refused; ``reason`` says why (sent back in the reply, cut to
    :data:`MAX_REASON_CHARS`). ``authenticated``: its signature had been verified."""

    def __init__(self, reason: str, command_id: str | None = None,
                 command_type: str | None = None) -> None:
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS - 1] + "…"
        super().__init__(reason)
        self.reason = reason
        self.command_id = command_id
        self.command_type = command_type
        self.authenticated = False


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command, ready for the control loop."""

    id: str
    type: str
    target: str
    issued_at: float
    expires_at: float
    params: Mapping[str, Any]
    digest: str  # SHA-256 of the canonical form: the same id must mean the same command
    raw: Mapping[str, Any] = field(repr=False)


def canonical(command: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: every field but ``signature``, sorted, compact."""
    body = {k: v for k, v in command.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def digest(command: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(command)).hexdigest()


def sign_hmac(command: dict[str, Any], key: bytes) -> dict[str, Any]:
    """A copy of ``command`` with an HMAC-SHA256 signature (for operators and tests)."""
    value = hmac.new(key, canonical(command), hashlib.sha256).hexdigest()
    return {**command, "signature": {"alg": "hmac-sha256", "value": value}}


def sign_ed25519(command: dict[str, Any], private_key_pem: bytes) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    value = base64.b64encode(key.sign(canonical(command))).decode()
    return {**command, "signature": {"alg": "ed25519", "value": value}}


@dataclass(frozen=True)
class Verifier:
    """The keys this gateway accepts commands with (at least one must be set)."""

    hmac_key: bytes | None = None
    ed25519_public_key_pem: bytes | None = None

    def verify(self, command: Mapping[str, Any]) -> None:
        signature = command.get("signature")
        if not isinstance(signature, dict) or set(signature) != {"alg", "value"}:
            raise CommandRejectedError("signature: expected {\"alg\": …, \"value\": …}")
        alg, value = signature["alg"], signature["value"]
        if not isinstance(value, str):
            raise CommandRejectedError("signature.value: expected a string")
        message = canonical(command)
        if alg == "hmac-sha256":
            if self.hmac_key is None:
                raise CommandRejectedError("signature: hmac-sha256 is not enabled here")
            expected = hmac.new(self.hmac_key, message, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected.encode(), value.lower().encode()):
                raise CommandRejectedError("bad signature")
        elif alg == "ed25519":
            if self.ed25519_public_key_pem is None:
                raise CommandRejectedError("signature: ed25519 is not enabled here")
            self._verify_ed25519(message, value)
        else:
            raise CommandRejectedError(f"signature.alg: expected \"hmac-sha256\" or "
                                       f"\"ed25519\", got {json.dumps(alg)}")

    def _verify_ed25519(self, message: bytes, value: str) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        assert self.ed25519_public_key_pem is not None
        key = load_pem_public_key(self.ed25519_public_key_pem)
        if not isinstance(key, Ed25519PublicKey):
            raise CommandRejectedError("ed25519 key configured is not an Ed25519 key")
        try:
            key.verify(base64.b64decode(value, validate=True), message)
        except (InvalidSignature, ValueError):
            raise CommandRejectedError("bad signature") from None


# -- validation -----------------------------------------------------------------------

#: Parameters of each command type: name -> (kind, required).
_SCHEDULE = {"start_at": ("time", False), "ramp_s": ("ramp", False),
             "randomize_s": ("ramp", False)}
COMMAND_TYPES: dict[str, dict[str, tuple[str, bool]]] = {
    "shed": {"kw": ("kw_positive", True), "duration_s": ("duration", True),
             "loads": ("load_list", False), **_SCHEDULE},
    "cap_import": {"kw": ("kw_nonnegative", True), "duration_s": ("duration", True),
                   **_SCHEDULE},
    "grid_setpoint": {"kw": ("kw_signed", True), "duration_s": ("duration", True),
                      **_SCHEDULE},
    "battery_setpoint": {"power_w": ("battery_power", True), "duration_s": ("duration", True),
                         "start_at": ("time", False)},
    "sg_ready": {"state": ("sg_state", True), "duration_s": ("duration", True),
                 "start_at": ("time", False)},
    "release": {},
    "cancel": {"command_id": ("command_id", True)},
    "modify": {"command_id": ("command_id", True), "kw": ("kw_signed", False),
               "duration_s": ("duration", False)},
}
_TARGET_KINDS = {"shed": "site", "cap_import": "site", "grid_setpoint": "site",
                 "battery_setpoint": "battery", "sg_ready": "heat_pump", "release": "any",
                 "cancel": "site", "modify": "site"}
#: How far ahead a command may schedule its start.
MAX_LEAD_S = 7 * 86400.0

#: (device, capability) -> latest value, for rating checks.
Ratings = Callable[[str, str], float | None]


#: How deep objects and arrays may nest (a command needs 3), how long a number may be
#: written, and how long a rejection reason may get (it may quote the payload).
MAX_DEPTH = 8
MAX_NUMBER_CHARS = 32
MAX_REASON_CHARS = 200
#: A JSON string, or a bracket outside strings (for the nesting check).
_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _reject_constant(name: str) -> float:
    raise CommandRejectedError(f"{name} is not a number JSON allows")


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise CommandRejectedError(f"a number of {len(text)} characters (at most "
                                   f"{MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise CommandRejectedError(f"{text[:MAX_NUMBER_CHARS]} is out of range for a number")
    return value


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise CommandRejectedError(f"a number of {len(text)} characters (at most "
                                   f"{MAX_NUMBER_CHARS})")
    return int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise CommandRejectedError(f"duplicate key {_quote(key)}")
        data[key] = value
    return data


def _quote(text: str) -> str:
    """``text`` quoted for a reason, cut to a few dozen characters."""
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _depth_exceeds(text: str, limit: int) -> bool:
    depth = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


def _check_strings(value: object) -> None:
    """Every string must be UTF-8 encodable (JSON's ``\\ud800`` escapes are not), or
    the canonical form — and the signature — would not exist."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise CommandRejectedError("a string with a lone surrogate (\\ud800…)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def parse(payload: bytes) -> dict[str, Any]:
    """Bytes to a JSON object. Rejects (:class:`CommandRejectedError`, never anything
    else): oversized payloads, non-UTF-8, invalid JSON, nesting deeper than
    :data:`MAX_DEPTH`, duplicate keys, NaN/Infinity and numbers that overflow or are
    written with more than :data:`MAX_NUMBER_CHARS` characters, lone surrogates."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandRejectedError(f"payload of {len(payload)} bytes exceeds "
                                   f"{MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandRejectedError("payload is not UTF-8") from None
    if _depth_exceeds(text, MAX_DEPTH):
        raise CommandRejectedError(f"objects and arrays nest deeper than {MAX_DEPTH}")
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_float,
                          parse_int=_int, object_pairs_hook=_object)
    except CommandRejectedError as exc:
        raise CommandRejectedError(f"invalid JSON: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise CommandRejectedError(f"invalid JSON: {exc.msg} at position {exc.pos}") from None
    except (ValueError, RecursionError) as exc:  # belt and braces: a reason, never a crash
        raise CommandRejectedError(f"invalid JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise CommandRejectedError("expected a JSON object")
    _check_strings(data)
    return data


def _number(value: object, where: str, low: float, high: float, *,
            low_exclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandRejectedError(f"{where}: expected a number, got {json.dumps(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise CommandRejectedError(f"{where}: expected a finite number")
    if number < low or (low_exclusive and number == low) or number > high:
        bound = f"> {low:g}" if low_exclusive else f">= {low:g}"
        raise CommandRejectedError(f"{where}: {number:g} is outside the allowed range "
                                   f"({bound} and <= {high:g})")
    return number


def validate(payload: bytes, *, site: SiteSpec, verifier: Verifier, now_s: float,
             max_skew_s: float, ratings: Ratings) -> Command:
    """Parse, authenticate and check a command. Raises :class:`CommandRejectedError`.

    Checks run in this order: size, JSON, shape and types, signature, times, then the
    meaning (targets, ranges, ratings), so an unsigned command never learns more than
    that its signature is bad.
    """
    data = parse(payload)
    command_id, command_type = data.get("id"), data.get("type")
    try:
        return _validate(data, site=site, verifier=verifier, now_s=now_s,
                         max_skew_s=max_skew_s, ratings=ratings)
    except CommandRejectedError as exc:  # echo only an id and a type that look right
        exc.command_id = command_id if isinstance(command_id, str) and _ID.fullmatch(
            command_id) else None
        exc.command_type = command_type if isinstance(command_type, str) and \
            command_type in COMMAND_TYPES else None
        raise


def _validate(data: dict[str, Any], *, site: SiteSpec, verifier: Verifier, now_s: float,
              max_skew_s: float, ratings: Ratings) -> Command:
    unknown = sorted(set(data) - _TOP_FIELDS)
    if unknown:
        raise CommandRejectedError(f"unknown field {unknown[0]!r}")
    missing = sorted({"id", "type", "target", "issued_at", "expires_at", "signature"}
                     - set(data))
    if missing:
        raise CommandRejectedError(f"missing field {missing[0]!r}")
    command_id = data["id"]
    if not isinstance(command_id, str) or not _ID.fullmatch(command_id):
        raise CommandRejectedError("id: expected 1–64 letters, digits or _ . : -")
    command_type = data["type"]
    if not isinstance(command_type, str) or command_type not in COMMAND_TYPES:
        raise CommandRejectedError(f"type: expected one of {', '.join(COMMAND_TYPES)}")
    if not isinstance(data["target"], str):
        raise CommandRejectedError("target: expected a string")
    issued = _number(data["issued_at"], "issued_at", 0, 1e11)
    expires = _number(data["expires_at"], "expires_at", 0, 1e11)
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise CommandRejectedError("params: expected an object")
    verifier.verify(data)
    try:
        return _check_meaning(data, command_id, command_type, issued, expires, params,
                              site=site, now_s=now_s, max_skew_s=max_skew_s, ratings=ratings)
    except CommandRejectedError as exc:
        exc.authenticated = True
        raise


def _check_meaning(data: dict[str, Any], command_id: str, command_type: str, issued: float,
                   expires: float, params: dict[str, Any], *, site: SiteSpec, now_s: float,
                   max_skew_s: float, ratings: Ratings) -> Command:
    """The checks after the signature: times, targets, ranges, ratings."""
    if issued > now_s + max_skew_s:
        raise CommandRejectedError(f"issued_at is {issued - now_s:.0f} s in the future "
                                   f"(allowed skew {max_skew_s:g} s)")
    if expires <= issued:
        raise CommandRejectedError("expires_at must be after issued_at")
    if expires < now_s - max_skew_s:
        raise CommandRejectedError(f"expired {now_s - expires:.0f} s ago")
    target = _check_target(command_type, data["target"], site)
    checked = _check_params(command_type, target, params, site, ratings)
    start = checked.get("start_at")
    if start is not None:
        if start > now_s + MAX_LEAD_S:
            raise CommandRejectedError("params.start_at: more than 7 days ahead")
        if start + checked["duration_s"] < now_s - max_skew_s:
            raise CommandRejectedError("params.start_at: the event would already be over")
    if command_type == "modify" and "kw" not in checked and "duration_s" not in checked:
        raise CommandRejectedError("params: modify needs kw or duration_s")
    return Command(command_id, command_type, target, issued, expires, checked,
                   digest(data), data)


# -- the decision -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one command. ``result``: "accepted", "rejected" or "duplicate";
    ``status``: what the reply says (for a duplicate, the first answer); ``reason``: why
    (also for the audit); ``authenticated``: its signature was verified."""

    result: str
    reason: str
    command_id: str | None = None
    command_type: str | None = None
    command: Command | None = None
    authenticated: bool = False
    status: str = ""

    @property
    def reply_status(self) -> str:
        return self.status or self.result


#: (digest, first answer) of a command id seen before, or None.
Seen = Callable[[str], "tuple[str, str] | None"]


def decide(payload: bytes, *, site: SiteSpec, verifier: Verifier, now_s: float,
           max_skew_s: float, ratings: Ratings, seen: Seen, room: bool) -> Decision:
    """Decide on one command: validate it (:func:`validate`), then the replay window
    (``seen``: the same command again is a duplicate with the first answer, another
    under a known id a replay), then whether the control loop has ``room``. Pure: it
    reads through ``ratings`` and ``seen`` and changes nothing. Every failure is a
    rejection with a reason; nothing a payload can hold makes it raise."""
    try:
        command = validate(payload, site=site, verifier=verifier, now_s=now_s,
                           max_skew_s=max_skew_s, ratings=ratings)
    except CommandRejectedError as exc:
        return Decision("rejected", exc.reason, exc.command_id, exc.command_type,
                        authenticated=exc.authenticated)
    known = seen(command.id)
    if known is not None:
        first_digest, first_answer = known
        if first_digest == command.digest:
            return Decision("duplicate", first_answer, command.id, command.type, command,
                            authenticated=True, status=first_answer)
        return Decision("rejected", "replayed id: a different command was received with "
                        "this id", command.id, command.type, authenticated=True)
    if not room:
        return Decision("rejected", "busy: the control loop has too many commands waiting",
                        command.id, command.type, authenticated=True)
    return Decision("accepted", "queued for the control loop", command.id, command.type,
                    command, authenticated=True)


def _check_target(command_type: str, target: str, site: SiteSpec) -> str:
    kind = _TARGET_KINDS[command_type]
    if kind == "site" or (kind == "any" and target == "site"):
        if target != "site":
            raise CommandRejectedError(f'target: expected "site" for {command_type}')
        return target
    device = site.devices.get(target)
    if device is None:
        raise CommandRejectedError(f"target: unknown device {target!r}")
    if kind != "any" and device.device_map.kind != kind:
        raise CommandRejectedError(f"target: {target} is a {device.device_map.kind}, "
                                   f"not a {kind}")
    return target


def _check_params(command_type: str, target: str, params: dict[str, Any], site: SiteSpec,
                  ratings: Ratings) -> dict[str, Any]:
    spec = COMMAND_TYPES[command_type]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise CommandRejectedError(f"params: unknown field {unknown[0]!r}")
    checked: dict[str, Any] = {}
    for name, (kind, required) in spec.items():
        where = f"params.{name}"
        if name not in params:
            if required:
                raise CommandRejectedError(f"{where}: missing")
            continue
        value = params[name]
        if kind == "duration":
            checked[name] = _number(value, where, 0, MAX_DURATION_S, low_exclusive=True)
        elif kind in ("kw_positive", "kw_nonnegative"):
            checked[name] = _number(value, where, 0, 1e6,
                                    low_exclusive=kind == "kw_positive")
        elif kind == "kw_signed":
            checked[name] = _number(value, where, -1e6, 1e6)
        elif kind == "time":
            checked[name] = _number(value, where, 0, 1e11)
        elif kind == "ramp":
            checked[name] = _number(value, where, 0, 3600)
        elif kind == "sg_state":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4:
                raise CommandRejectedError(f"{where}: expected an integer 1–4")
            checked[name] = value
        elif kind == "command_id":
            if not isinstance(value, str) or not _ID.fullmatch(value):
                raise CommandRejectedError(f"{where}: expected a command id")
            checked[name] = value
        elif kind == "load_list":
            checked[name] = _check_loads(value, where, site)
        elif kind == "battery_power":
            checked[name] = _check_battery_power(value, where, target, ratings)
    if command_type == "shed":
        _check_shed_capacity(checked, site)
    if command_type in ("shed", "cap_import", "grid_setpoint") and checked.get(
            "ramp_s", 0.0) >= checked["duration_s"]:
        raise CommandRejectedError("params.ramp_s: must be shorter than duration_s")
    return checked


def _check_loads(value: object, where: str, site: SiteSpec) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise CommandRejectedError(f"{where}: expected a non-empty list of load names")
    for name in value:
        load = site.loads.get(name)
        if load is None:
            raise CommandRejectedError(f"{where}: unknown load {name!r}")
        if not load.sheddable:
            raise CommandRejectedError(f"{where}: load {name!r} is not sheddable")
    return list(value)


def _check_shed_capacity(params: dict[str, Any], site: SiteSpec) -> None:
    names = params.get("loads") or [n for n, load in site.loads.items() if load.sheddable]
    capacity_kw = sum(site.loads[n].rated_w for n in names) / 1000.0
    if params["kw"] > capacity_kw:
        raise CommandRejectedError(f"params.kw: {params['kw']:g} kW is above the "
                                   f"{capacity_kw:g} kW of sheddable load")


def _check_battery_power(value: object, where: str, target: str, ratings: Ratings) -> float:
    power = _number(value, where, -1e7, 1e7)
    capability = "max_discharge_w" if power > 0 else "max_charge_w"
    rating = ratings(target, capability) or (
        ratings(target, "max_charge_w") if power > 0 else None)
    if rating is None:
        raise CommandRejectedError(f"{where}: the rating of {target} is not known yet")
    if abs(power) > rating:
        raise CommandRejectedError(f"{where}: {power:g} W is above the rating of {target} "
                                   f"({rating:g} W)")
    return power
