"""The simulated fleet: one device model per site device (the kind modules build them), wired
together — cabinets hold their lamps' models, a city's flood stations and rain gauges share its
rain field, flood and salinity stations read the predicted tide."""

from __future__ import annotations

from ioc.core.site import Site
from ioc.core.tides import TidePredictor
from ioc.simulators.cabinet import CabinetModel
from ioc.simulators.flood import FloodStationModel
from ioc.simulators.lighting import LampModel
from ioc.simulators.model import DeviceModel
from ioc.simulators.rain import CityRain, RainGaugeModel
from ioc.simulators.salinity import SalinityStationModel
from ioc.simulators.traffic import CameraModel, DetectorModel


def build_models(site: Site, seed: int) -> list[DeviceModel]:
    """One model per site device, in site order; deterministic for ``(site, seed)``.

    Cabinets get references to the models of their lamps (their feeder power is the sum of
    theirs); flood stations and rain gauges of one city share that city's rain field.
    """
    rain = {c.id: CityRain(c.id, seed) for c in site.cities}
    tides = TidePredictor.from_site(site)
    lamps: dict[str, LampModel] = {}
    for cabinet in site.devices_of(kind="cabinet"):
        phases = int(cabinet.attributes.get("phases", 3) or 3)
        for i, lamp in enumerate(site.lamps_on(cabinet.id)):
            lamps[lamp.id] = LampModel(lamp, seed, phase=i % phases, feeder_position=i)
    models: list[DeviceModel] = []
    for d in site.devices:
        if d.kind == "lighting":
            models.append(lamps[d.id])
        elif d.kind == "cabinet":
            models.append(CabinetModel(d, seed, [lamps[x.id] for x in site.lamps_on(d.id)]))
        elif d.kind == "flood":
            models.append(FloodStationModel(d, seed, rain[d.city], tides))
        elif d.kind == "rain":
            models.append(RainGaugeModel(d, seed, rain[d.city]))
        elif d.kind == "salinity":
            models.append(SalinityStationModel(d, seed, tides))
        elif d.kind == "traffic":
            if d.attributes.get("role") == "camera":
                models.append(CameraModel(d, seed))
            else:
                models.append(DetectorModel(d, seed))
    return models
