# ESP32 entry point, copied to the board's root as main.py (frozen builds freeze it too).
from submeter import hal_esp32

hal_esp32.main()
