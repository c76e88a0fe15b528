"""Build the Cython kernels of fastcore/ as part of every normal install."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("fastcore._energy", ["fastcore/_energy.pyx"], extra_compile_args=["-O3"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
