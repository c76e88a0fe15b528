"""Build the Cython kernels of fastcore/ as part of every normal install."""

from Cython.Build import cythonize
from setuptools import Extension, setup

# -ffp-contract=off: no fused multiply-add, so the kernels round exactly like their
# pure-Python twins (the property tests compare them) even when built with -march=native.
_FASTCORE_FLAGS = ["-O3", "-ffp-contract=off"]

extensions = [
    Extension("fastcore._codes", ["fastcore/_codes.pyx"], extra_compile_args=_FASTCORE_FLAGS),
    Extension("fastcore._energy", ["fastcore/_energy.pyx"], extra_compile_args=["-O3"]),
    Extension("fastcore._meter", ["fastcore/_meter.pyx"], extra_compile_args=_FASTCORE_FLAGS),
    Extension("fastcore._shed", ["fastcore/_shed.pyx"], extra_compile_args=_FASTCORE_FLAGS),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
