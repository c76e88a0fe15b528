"""The planner: forecasts, a rolling-horizon plan solved with HiGHS, and the service that
keeps a good plan at hand for the control loop without ever making it wait."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.control.settings import ControlSettings
from controller.planner.settings import PlannerSettings, planner_settings
from controller.tariffs import BasicChargeBasis
from drivers.site import SiteSpec

if TYPE_CHECKING:
    from controller.metering import MeteringSettings
    from controller.planner.service import PlannerService

__all__ = ["PlannerSettings", "planner_for", "planner_service", "planner_settings"]


def planner_for(site: SiteSpec, control: ControlSettings, metering: MeteringSettings
                ) -> PlannerService | None:
    """The planner of a site whose ``[planner]`` is enabled, else None. Raises
    ConfigError for a malformed section."""
    if not planner_settings(site).enabled:
        return None
    return planner_service(site, control, metering)


def planner_service(site: SiteSpec, control: ControlSettings, metering: MeteringSettings
                    ) -> PlannerService:
    """The site's planner, enabled or not (``pedf plan`` previews it either way)."""
    from controller.planner.service import PlannerService  # highspy only when used

    settings = planner_settings(site)
    carbon = metering.carbon.kg_per_kwh
    return PlannerService(
        site, settings, control, metering.tariff,
        demand_price_cny_per_kw=(metering.tariff.basic.demand_cny_per_kw_month or 0.0)
        if metering.bill.basis is BasicChargeBasis.DEMAND else 0.0,
        carbon_kg_per_kwh=sum(carbon) / len(carbon) if carbon else 0.0)
