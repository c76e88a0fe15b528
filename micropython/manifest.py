# Freeze the sub-meter firmware into an ESP32 MicroPython build: its bytecode and strings
# then live in flash instead of the heap. Generate the register table first
# (`python micropython/tools/build.py` writes build/gen/submeter/regmap.py), then build
# the port from a MicroPython checkout:
#
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=$PWD/micropython/manifest.py
#
# Relative paths resolve against this file's directory. hal_unix.py (the unix-port HAL
# the tests use) is deliberately left out.
include("$(PORT_DIR)/boards/manifest.py")  # the port's own frozen modules

FIRMWARE = (
    "__init__", "app", "config", "ddsu666", "energy", "hal_esp32", "image", "kernels",
    "metering", "modbus", "mqtt", "netserve", "outbox", "store",
)
for name in FIRMWARE:
    module("submeter/%s.py" % name)
module("submeter/regmap.py", base_path="build/gen")
module("main.py")
