"""Type stub of the compiled shedding kernel (same API as fastcore._shed_py)."""

import numpy as np
import numpy.typing as npt

from fastcore._shed_common import RestorePlan, ShedPlan

def plan_shed(
    power_kw: npt.NDArray[np.float64],
    priority: npt.NDArray[np.int8],
    sheddable: npt.NDArray[np.bool_],
    *,
    target_kw: float | None = None,
    import_cap_kw: float | None = None,
    site_import_kw: float | None = None,
    locked_out: npt.NDArray[np.bool_] | None = None,
    on_since_s: npt.NDArray[np.float64] | None = None,
    min_on_s: npt.NDArray[np.float64] | None = None,
    now_s: float | None = None,
    group: npt.NDArray[np.int32] | None = None,
    cost: npt.NDArray[np.float64] | None = None,
    exact_max_items: int = 20,
) -> ShedPlan: ...
def plan_restore(
    power_kw: npt.NDArray[np.float64],
    priority: npt.NDArray[np.int8],
    shed: npt.NDArray[np.bool_],
    *,
    now_s: float,
    max_kw_per_step: float,
    step_s: float,
    shed_since_s: npt.NDArray[np.float64] | None = None,
    min_off_s: npt.NDArray[np.float64] | None = None,
    max_shed_s: npt.NDArray[np.float64] | None = None,
    group: npt.NDArray[np.int32] | None = None,
) -> RestorePlan: ...
