"""Pure physics models of the building's devices. No I/O: advanced by ``advance(t_s)``."""
