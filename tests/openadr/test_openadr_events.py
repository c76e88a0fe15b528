"""OpenADR events into the event model: signals, intervals, ramps, randomised starts,
modifications, overrides, implicit cancellations, restarts and the opt-out policy.

The building here is the simulated one without sockets (``SimPlant`` on a manual clock):
these tests are about what the VEN puts into the event book and answers the VTN, and
stepping the control loop by hand keeps them fast and exact. Where the VTN takes part it is
a real openleadr VTN in-process; elsewhere the events are still real openleadr messages —
rendered to XML, schema-validated and parsed as the VEN's client receives them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from oadr_support import (
    Utility,
    building,
    distributed,
    make_event,
    serving,
    site_with_openadr,
    until,
)

from controller import streams
from controller.commands import Command
from controller.openadr import openadr_settings, parse_event
from drivers.site import load_site


def lab(url: str = "http://127.0.0.1:1/OpenADR2/Simple/2.0b", extra: str = "") -> str:
    return f'vtn_url = "{url}"\nven_name = "jinan-office"\n{extra}'


# -- signals, through real openleadr messages ---------------------------------------------


@pytest.mark.parametrize(("signal", "payloads", "scale", "expected"), [
    (("SIMPLE", "level"), [2.0], None, ("reduction", [20.0])),
    (("SIMPLE", "level"), [1.0, 3.0, 0.0], None, ("reduction", [10.0, 30.0, 0.0])),
    (("LOAD_DISPATCH", "delta"), [-30000.0], "none", ("reduction", [30.0])),
    (("LOAD_DISPATCH", "delta"), [-0.05], "M", ("reduction", [50.0])),
    (("LOAD_DISPATCH", "delta"), [-30.0], None, ("reduction", [30.0])),  # no itemBase: kW
    (("LOAD_DISPATCH", "setpoint"), [80.0], "k", ("cap", [80.0])),
    (("LOAD_CONTROL", "x-loadControlCapacity"), [0.5], None, ("cap", [100.0])),
    (("LOAD_DISPATCH", "delta"), [20.0], "k", None),  # more load: not offered
    (("ELECTRICITY_PRICE", "price"), [0.9], None, None),
])
def test_signal_mapping(signal: tuple[str, str], payloads: list[float], scale: str | None,
                        expected: tuple[str, list[float]] | None, tmp_path: Path) -> None:
    site = site_with_openadr(tmp_path, "[openadr]\n" + lab(extra="capacity_kw = 200"))
    settings = openadr_settings(load_site(site))
    assert settings is not None
    start = datetime(2026, 6, 22, 6, 0, tzinfo=UTC)
    event = distributed(make_event("E", *signal, payloads, start=start, interval_s=900,
                                   scale=scale))[0]
    parsed = parse_event(event, settings)
    assert parsed.start == start
    assert parsed.duration_s == 900 * len(payloads)
    if expected is None:
        assert parsed.plan is None
        assert parsed.unsupported
        return
    assert parsed.plan is not None
    kind, values = expected
    assert parsed.plan.kind == kind
    assert [value for _, _, value in parsed.plan.intervals] == pytest.approx(values)
    assert [offset for offset, _, _ in parsed.plan.intervals] == [900 * i for i in
                                                                  range(len(payloads))]


# -- the policy --------------------------------------------------------------------------


async def test_opt_out_policy(tmp_path: Path) -> None:
    with building(tmp_path, lab(extra='opt_out_above_kw = 60\n'
                                      'market_contexts = ["oadr://jinan/dr"]')) as site:
        await site.run(60)  # readings and flexibility for the policy
        soon = datetime.now(UTC) + timedelta(minutes=5)

        def answer(event_id: str, *args: object, **options: object) -> str:
            event = make_event(event_id, *args, start=soon, **options)  # type: ignore[arg-type]
            return site.ven.handle(distributed(event)[0])

        assert answer("ok", "SIMPLE", "level", [2.0]) == "optIn"
        assert site.event("ok").status == "scheduled"
        assert answer("big", "LOAD_DISPATCH", "delta", [-80.0]) == "optOut"
        assert site.event("big").status == "opted_out"
        assert "opt_out_above_kw = 60" in site.ven.state["big"]["reason"]
        assert answer("other", "SIMPLE", "level", [1.0],
                      market_context="oadr://elsewhere") == "optOut"
        assert answer("price", "ELECTRICITY_PRICE", "price", [1.2]) == "optOut"
        assert "oadr:price" not in site.loop.book.events
        # a cap is judged by the reduction it implies from today's import
        grid_kw = site.ven.grid_kw()
        assert isinstance(grid_kw, float)
        assert answer("cap-low", "LOAD_DISPATCH", "setpoint", [grid_kw - 70.0]) == "optOut"
        assert answer("cap-ok", "LOAD_DISPATCH", "setpoint", [grid_kw - 20.0]) == "optIn"
        # a test event is answered but not acted on
        assert answer("test", "SIMPLE", "level", [1.0], test=True) == "optIn"
        assert "oadr:test" not in site.loop.book.events
        rows = {row["command_id"]: (str(row["result"]), str(row["reason"]))
                for row in site.store.audit_rows() if row["source"] == "openadr"}
        assert rows["oadr:big"][0] == "optOut"
        assert rows["oadr:ok"][0] == "optIn"
        assert "not acted on" in rows["oadr:test"][1]


async def test_more_than_the_site_can_shed_now_is_declined(tmp_path: Path) -> None:
    with building(tmp_path, lab()) as site:
        await site.run(60)
        soon = datetime.now(UTC) + timedelta(minutes=5)
        later = datetime.now(UTC) + timedelta(hours=5)
        huge = make_event("huge", "LOAD_DISPATCH", "delta", [-900.0], start=soon)
        assert site.ven.handle(distributed(huge)[0]) == "optOut"
        assert "the site can shed" in site.ven.state["huge"]["reason"]
        # hours ahead, today's flexibility says little: only opt_out_above_kw applies
        tomorrow = make_event("later", "LOAD_DISPATCH", "delta", [-900.0], start=later)
        assert site.ven.handle(distributed(tomorrow)[0]) == "optIn"


async def test_not_participating_opts_out_of_everything(tmp_path: Path) -> None:
    with building(tmp_path, lab(extra="participate = false")) as site:
        event = make_event("E", "SIMPLE", "level", [1.0])
        assert site.ven.handle(distributed(event)[0]) == "optOut"
        assert site.event("E").status == "opted_out"
        assert not site.loop.book.running(site.clock.now() + 10)


# -- repeats, restarts, implicit cancellation --------------------------------------------


async def test_a_restart_gives_the_same_answer_and_schedules_nothing_twice(
        tmp_path: Path) -> None:
    event = distributed(make_event("E", "LOAD_DISPATCH", "delta", [-25.0],
                                   start=datetime.now(UTC) + timedelta(minutes=10)))[0]
    with building(tmp_path, lab()) as site:
        assert site.ven.handle(event) == "optIn"
        assert site.ven.handle(event) == "optIn"  # the VTN sent it again
        await site.loop.cycle()  # the loop saves its book
        first = site.event("E")
    with building(tmp_path / "again", lab(), store_path=tmp_path / "state.sqlite") as site:
        assert site.ven.handle(event) == "optIn"
        assert site.event("E") == first
        rows = [row for row in site.store.audit_rows() if row["command_id"] == "oadr:E"]
        assert len(rows) == 1  # one decision, not three


async def test_an_event_the_book_lost_in_a_crash_is_scheduled_again(tmp_path: Path) -> None:
    event = distributed(make_event("E", "LOAD_DISPATCH", "delta", [-25.0],
                                   start=datetime.now(UTC) + timedelta(minutes=10)))[0]
    with building(tmp_path, lab()) as site:
        assert site.ven.handle(event) == "optIn"
        first = site.event("E")  # the process dies before the loop saves its book
    with building(tmp_path / "again", lab(), store_path=tmp_path / "state.sqlite") as site:
        assert "oadr:E" not in site.loop.book.events
        assert site.ven.handle(event) == "optIn"
        again = site.event("E")
        assert (again.kind, again.value, again.start_s, again.duration_s) == (
            first.kind, first.value, first.start_s, first.duration_s)


async def test_an_event_the_vtn_stops_distributing_is_cancelled(tmp_path: Path) -> None:
    with building(tmp_path, lab()) as site:
        keep = make_event("keep", "SIMPLE", "level", [1.0])
        gone = make_event("gone", "SIMPLE", "level", [2.0])
        for event in distributed(keep, gone):
            assert site.ven.handle(event) == "optIn"
        await site.run(10)
        assert site.event("gone").status == "active"
        # the next oadrDistributeEvent lists only one of them
        await site.ven._after_parse("oadrDistributeEvent",
                                    {"events": distributed(keep)})
        assert site.event("gone").status == "cancelled"
        assert site.event("keep").status == "active"
        assert "implicit" in site.ven.state["gone"]["reason"]


# -- with the VTN ------------------------------------------------------------------------


async def test_intervals_ramp_randomised_start_and_a_modification(
        tmp_path: Path, utility: Utility) -> None:
    with building(tmp_path, lab(utility.url, "simple_levels_kw = [15, 25, 35]")) as site:
        await site.run(120)  # some history for the baseline
        start = datetime.now(UTC) + timedelta(seconds=30)
        async with serving(site.ven.run):
            event = utility.add("EVT-R", "SIMPLE", "level", [1.0, 3.0], start=start,
                                interval_s=300, ramp_up_s=60, startafter_s=120)
            await until(lambda: ("optIn", 0) in utility.answers("EVT-R"), what="optIn")
            dr = site.event("EVT-R")
            assert (dr.kind, dr.value, dr.ramp_s, dr.randomize_s) == ("reduction", 15.0,
                                                                      60.0, 120.0)
            # dtstart was 30 s ahead of the VTN's clock; ramping starts 60 s before it
            assert 27.0 < dr.start_s + 60.0 - site.clock.now() <= 30.0
            assert dr.duration_s == 660.0
            assert 0.0 <= dr.begin_s - dr.start_s <= 120.0  # the randomised start
            # ramping in, then the first interval, then the second
            await site.run(dr.begin_s + 30.0 - site.clock.now(), step_s=1.0)
            assert site.event("EVT-R").status == "active"
            assert site.event("EVT-R").ramp_fraction(site.clock.now()) == pytest.approx(
                0.5, abs=0.05)
            await site.run(dr.begin_s + 60.0 + 310.0 - site.clock.now())
            assert site.event("EVT-R").value == 35.0
            # the utility modifies the event: both intervals now at level 2
            utility.modify(event, [2.0, 2.0])
            await until(lambda: ("optIn", 1) in utility.answers("EVT-R"),
                        what="modification answered")
            modified = site.event("EVT-R")
            assert modified.value == 25.0
            assert modified.modification == dr.modification + 1
            assert (modified.begin_s, modified.end_s) == (dr.begin_s, dr.end_s)
            assert site.ven.state["EVT-R"]["mod"] == 1
        rows = [row["command_type"] for row in site.store.audit_rows()
                if row["command_id"] == "oadr:EVT-R"]
        assert rows == ["openadr_modification", "openadr_event"]


async def test_a_local_override_is_reported_to_the_vtn(tmp_path: Path,
                                                       utility: Utility) -> None:
    with building(tmp_path, lab(utility.url, "poll_interval_s = 1.5")) as site:
        async with serving(site.ven.run):
            utility.add("EVT-O", "LOAD_DISPATCH", "delta", [-20.0], scale="k")
            await until(lambda: ("optIn", 0) in utility.answers("EVT-O"), what="optIn")
            await until(lambda: site.ven.registered, what="registered")
            polls = [job.trigger.interval.total_seconds()
                     for job in site.ven.client.scheduler.get_jobs()
                     if getattr(job.func, "__name__", "") == "_poll"]
            assert polls == [1.5]  # ours, not the VTN's 1 s
            await site.run(30)
            assert site.event("EVT-O").status == "active"
            # the operator releases the site over MQTT: the VTN hears optOut
            now = site.clock.now()
            site.loop.apply_command(Command("op-1", "release", "site", now, now + 60, {},
                                            "digest", {}), now)
            await site.ven.tick()
            await until(lambda: utility.answers("EVT-O")[-1:] == [("optOut", 0)],
                        what="unsolicited optOut")
            assert site.ven.state["EVT-O"]["opt"] == "optOut"
        messages = [json.loads(m.payload) for m in site.store.pending(limit=1000)
                    if m.stream == streams.EVENTS]
    assert any(m["type"] == "openadr_override" and m["opt"] == "optOut" for m in messages)
