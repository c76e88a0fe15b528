"""Type stub of the compiled 分类分项 roll-up kernel (same API as fastcore._codes_py)."""

import numpy as np
import numpy.typing as npt

def rollup_codes(series_code: object, parent: object,
                 energy: object) -> npt.NDArray[np.float64]: ...
