import numpy as np
import numpy.typing as npt

from fastcore._energy_py import EnergyTotals

def integrate_energy(
    timestamps_s: npt.NDArray[np.float64], power_w: npt.NDArray[np.float64], max_gap_s: float
) -> EnergyTotals: ...
