# PEDF Toolkit ESP32 sub-meter firmware (MicroPython). See micropython/README.md.
VERSION = (1, 0)
