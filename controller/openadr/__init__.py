"""OpenADR 2.0b: a VEN that takes a utility's events into the control loop's event model.

The VEN is openleadr's ``OpenADRClient`` (HTTP pull, 2.0b profile). It registers with the
VTN, polls it, and turns every ``oadrEvent`` into a :class:`~controller.control.events.DrEvent`
in the control loop's :class:`~controller.control.events.EventBook` — the same model the
MQTT commands land in — after deciding, by the ``[openadr]`` policy, whether to opt in.
It reports the site's grid power (``TELEMETRY_USAGE``) whenever the VTN asks for it.

Signal mapping (docs/openadr.md has the full table):

* ``LOAD_DISPATCH`` / ``delta``: a reduction of −payload (negative delta = less import);
* ``LOAD_DISPATCH`` / ``setpoint``: an import cap of payload;
* ``LOAD_CONTROL`` / ``x-loadControlCapacity``: an import cap of payload × ``capacity_kw``;
* ``SIMPLE`` / ``level`` 1–3: a reduction of ``simple_levels_kw[level − 1]`` (0: none).

Power payloads are read in the unit the signal's ``itemBase`` gives (W with an SI scale);
without one they are taken as kW. An event with several intervals becomes one DrEvent whose
value follows the current interval. ``x-eiRampUp`` starts the DrEvent that much earlier and
ramps it in, so the target is met at ``dtstart``; ``tolerance/startafter`` becomes the
DrEvent's randomised start. Modifications (a new ``modificationNumber``) modify the DrEvent,
cancellations — explicit, or implicit when a distributed event disappears from the VTN's
list — cancel it. When an operator cancels or releases an opted-in event locally, the VTN is
told with an unsolicited ``oadrCreatedEvent`` optOut.

Every decision is written to the store's audit table (source ``openadr``) and published on
``<prefix>/events``; what the VEN knows about each event (modification number, opt answer,
intervals) is saved in the store, so after a restart the same event gets the same answer
and is not scheduled twice.

Failure behaviour: an unreachable or refusing VTN is retried with backoff (1 s doubling to
60 s); events already in the book run to their end whether or not the VTN is reachable.
"""

from controller.openadr.settings import OpenAdrSettings, check_openadr, openadr_settings
from controller.openadr.signals import OadrEvent, Plan, decide, parse_event
from controller.openadr.ven import Ven, ven_for

__all__ = ["OadrEvent", "OpenAdrSettings", "Plan", "Ven", "check_openadr",
           "decide", "openadr_settings", "parse_event", "ven_for"]
