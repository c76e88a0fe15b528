"""Type-check the firmware against ``micropython-esp32-stubs`` with mypy.

    python micropython/tools/typecheck.py [--keep DIR]

mypy needs MicroPython's modules (``machine``, ``micropython``, its ``time``, ``socket``
and ``select``...) to replace CPython's, so this assembles a custom typeshed in a
temporary directory: the stdlib of ``micropython-stdlib-stubs`` overlaid with every stub
of ``micropython-esp32-stubs``, plus the viper pointer types (``ptr8``, ``ptr16``,
``ptr32``) as builtins the way the stubs' ``__builtins__.pyi`` declares them for Pyright.
Then it runs ``mypy --custom-typeshed-dir`` over ``micropython/submeter`` (the generated
``regmap.py`` included) and ``micropython/main.py``. Exit status is mypy's.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRMWARE = HERE.parent
sys.path.insert(0, str(HERE))

import build  # noqa: E402

STUBS = "micropython-esp32-stubs"
STDLIB = "micropython-stdlib-stubs"
#: The unix-port HAL uses termios and modules of the unix port; it is host-side only.
SKIP = frozenset({"hal_unix.py"})
BUILTINS_PATCH = """
# Added by micropython/tools/typecheck.py: viper types are builtins in MicroPython.
from _mpy_shed._mpy_builtins import ptr as ptr, ptr8 as ptr8, ptr16 as ptr16
from _mpy_shed._mpy_builtins import ptr32 as ptr32, uint as uint
"""


class StubsMissingError(RuntimeError):
    pass


def _files(distribution: str) -> list[Path]:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise StubsMissingError(f"{distribution} is not installed: pip install {STUBS}") from None
    return [Path(str(dist.locate_file(f))) for f in dist.files or []
            if str(f).endswith(".pyi") or str(f).endswith("VERSIONS")]


def make_typeshed(target: Path) -> Path:
    """Assemble the MicroPython typeshed in ``target``; returns it."""
    stdlib = target / "stdlib"
    for path in _files(STDLIB):  # stdlib/... and stubs/mypy-extensions (mypy needs it)
        parts = path.parts
        top = next((k for k, part in enumerate(parts) if part in ("stdlib", "stubs")), None)
        if top is None:
            continue
        dest = target.joinpath(*parts[top:])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    site = None
    modules: set[str] = set()
    for path in _files(STUBS):
        if site is None:
            site = next(p for p in path.parents if p.name == "site-packages")
        rel = path.relative_to(site)
        if rel.parts[0].endswith(".dist-info") or rel.name == "__builtins__.pyi":
            continue
        (stdlib / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, stdlib / rel)
        modules.add(rel.parts[0].removesuffix(".pyi"))
    if site is not None:  # the helper package the stubs import
        shutil.copytree(site / "_mpy_shed", stdlib / "_mpy_shed", dirs_exist_ok=True)
        modules.add("_mpy_shed")
    versions = stdlib / "VERSIONS"
    known = {line.split(":")[0].strip() for line in versions.read_text().splitlines()
             if line and not line.startswith("#")}
    with versions.open("a") as f:
        for name in sorted(modules - known):
            f.write(f"{name}: 3.0-\n")
    with (stdlib / "builtins.pyi").open("a") as f:
        f.write(BUILTINS_PATCH)
    return target


def sources(gen_dir: Path) -> list[Path]:
    files = [p for p in (FIRMWARE / "submeter").glob("*.py") if p.name not in SKIP]
    return [*sorted(files), gen_dir / "submeter" / "regmap.py", FIRMWARE / "main.py"]


def run(work: Path) -> subprocess.CompletedProcess[str]:
    typeshed = make_typeshed(work / "typeshed")
    # Check the firmware as one package: the sources plus the generated table, side by side.
    package = work / "src" / "submeter"
    package.mkdir(parents=True)
    regmap = package / "regmap.py"
    regmap.write_text(build.generate(), encoding="utf-8")
    targets = []
    for path in sources(work / "src"):
        if path.parent == FIRMWARE / "submeter":
            shutil.copyfile(path, package / path.name)
            targets.append(package / path.name)
        elif path != regmap:
            shutil.copyfile(path, work / "src" / path.name)
            targets.append(work / "src" / path.name)
    targets.append(regmap)
    command = [
        sys.executable, "-m", "mypy", "--custom-typeshed-dir", str(typeshed),
        "--python-version", "3.11", "--no-site-packages", "--no-incremental",
        "--cache-dir", str(work / "cache"), "--check-untyped-defs",
        "--no-error-summary", "--show-error-codes", "--hide-error-context",
        "--explicit-package-bases", *map(str, targets),
    ]
    return subprocess.run(command, cwd=work / "src", capture_output=True, text=True,
                          check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="assemble the typeshed in DIR and keep it")
    args = parser.parse_args(argv)
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            result = run(args.keep)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                result = run(Path(tmp))
    except StubsMissingError as exc:
        print(f"typecheck: {exc}", file=sys.stderr)
        return 2
    print(result.stdout, end="")
    print(result.stderr, end="", file=sys.stderr)
    if result.returncode == 0:
        print("typecheck: firmware clean against micropython-esp32-stubs")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
