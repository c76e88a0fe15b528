"""Sun position and clear-sky irradiance on a tilted PV array. Pure functions.

Models: Spencer (1971) declination and equation of time; Haurwitz (1945) clear-sky global
horizontal irradiance; Erbs (1982) diffuse fraction; isotropic-sky transposition to the
plane of the array. Accurate to a few percent for clear days, which is what a building
simulator needs: the shape and size of a PV day at the site's latitude and season.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

_EPOCH = date(1970, 1, 1)

SOLAR_CONSTANT_W_M2 = 1367.0


@dataclass(frozen=True, slots=True)
class Location:
    latitude_deg: float  # + north
    longitude_deg: float  # + east
    utc_offset_h: float  # standard time zone, e.g. +8 for China

    @classmethod
    def jinan(cls) -> Location:
        return cls(latitude_deg=36.67, longitude_deg=117.0, utc_offset_h=8.0)


@dataclass(frozen=True, slots=True)
class SunPosition:
    zenith_deg: float
    azimuth_deg: float  # from south, + towards west
    day_of_year: int

    @property
    def above_horizon(self) -> bool:
        return self.zenith_deg < 90.0


def sun_position(location: Location, unix_s: float) -> SunPosition:
    """The sun's zenith and azimuth at ``unix_s`` (UTC seconds) seen from ``location``."""
    local_s = unix_s + location.utc_offset_h * 3600.0
    day_index = int(local_s // 86400)
    day_of_year = _day_of_year(day_index)
    hours = (local_s % 86400) / 3600.0
    gamma = 2.0 * math.pi * (day_of_year - 1) / 365.0
    declination = (
        0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma) + 0.00148 * math.sin(3 * gamma)
    )
    equation_of_time_min = 229.18 * (
        0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma)
    )
    meridian = 15.0 * location.utc_offset_h
    solar_hours = hours + (4.0 * (location.longitude_deg - meridian) + equation_of_time_min) / 60
    hour_angle = math.radians(15.0 * (solar_hours - 12.0))
    lat = math.radians(location.latitude_deg)
    cos_zenith = (math.sin(lat) * math.sin(declination)
                  + math.cos(lat) * math.cos(declination) * math.cos(hour_angle))
    zenith = math.acos(max(-1.0, min(1.0, cos_zenith)))
    sin_zenith = math.sin(zenith)
    if sin_zenith < 1e-9:
        azimuth = 0.0
    else:
        cos_az = (cos_zenith * math.sin(lat) - math.sin(declination)) / (sin_zenith * math.cos(lat))
        azimuth = math.copysign(math.acos(max(-1.0, min(1.0, cos_az))), hour_angle)
    return SunPosition(math.degrees(zenith), math.degrees(azimuth), day_of_year)


def _day_of_year(days_since_epoch: int) -> int:
    return (_EPOCH + timedelta(days=days_since_epoch)).timetuple().tm_yday


def clear_sky_ghi_w_m2(zenith_deg: float) -> float:
    """Haurwitz clear-sky global horizontal irradiance, W/m²."""
    cos_z = math.cos(math.radians(zenith_deg))
    if cos_z <= 0.0:
        return 0.0
    return 1098.0 * cos_z * math.exp(-0.059 / cos_z)


def plane_of_array_w_m2(sun: SunPosition, tilt_deg: float, azimuth_deg: float,
                        albedo: float = 0.2, clearness: float = 1.0) -> float:
    """Irradiance on a plane tilted ``tilt_deg`` facing ``azimuth_deg`` (0 = south,
    + west), W/m², for a clear sky scaled by ``clearness`` (0–1)."""
    if not sun.above_horizon:
        return 0.0
    ghi = clear_sky_ghi_w_m2(sun.zenith_deg) * clearness
    cos_z = math.cos(math.radians(sun.zenith_deg))
    extraterrestrial = SOLAR_CONSTANT_W_M2 * (
        1 + 0.033 * math.cos(2 * math.pi * sun.day_of_year / 365.0)
    ) * cos_z
    kt = min(1.0, ghi / extraterrestrial) if extraterrestrial > 0 else 0.0
    if kt <= 0.22:
        diffuse_fraction = 1.0 - 0.09 * kt
    elif kt <= 0.80:
        diffuse_fraction = (0.9511 - 0.1604 * kt + 4.388 * kt**2 - 16.638 * kt**3
                            + 12.336 * kt**4)
    else:
        diffuse_fraction = 0.165
    dhi = ghi * diffuse_fraction
    dni = (ghi - dhi) / cos_z if cos_z > 0.01 else 0.0
    tilt = math.radians(tilt_deg)
    zen = math.radians(sun.zenith_deg)
    cos_incidence = (math.cos(zen) * math.cos(tilt) + math.sin(zen) * math.sin(tilt)
                     * math.cos(math.radians(sun.azimuth_deg - azimuth_deg)))
    beam = dni * max(0.0, cos_incidence)
    sky = dhi * (1 + math.cos(tilt)) / 2
    ground = ghi * albedo * (1 - math.cos(tilt)) / 2
    return beam + sky + ground


@dataclass(frozen=True, slots=True)
class Climate:
    """Outdoor temperature as an annual plus a daily cosine (deterministic)."""

    annual_mean_c: float
    annual_amplitude_k: float
    warmest_day: int
    daily_amplitude_k: float
    warmest_hour: float = 15.0

    @classmethod
    def jinan(cls) -> Climate:
        # Jinan: January mean about −0.4 °C, July 27.5 °C (CMA 1991–2020 normals).
        return cls(annual_mean_c=13.6, annual_amplitude_k=14.0, warmest_day=200,
                   daily_amplitude_k=4.5)

    def temperature_c(self, location: Location, unix_s: float) -> float:
        local_s = unix_s + location.utc_offset_h * 3600.0
        day = _day_of_year(int(local_s // 86400))
        hour = (local_s % 86400) / 3600.0
        annual = math.cos(2 * math.pi * (day - self.warmest_day) / 365.0)
        daily = math.cos(2 * math.pi * (hour - self.warmest_hour) / 24.0)
        return self.annual_mean_c + self.annual_amplitude_k * annual + (
            self.daily_amplitude_k * daily
        )
