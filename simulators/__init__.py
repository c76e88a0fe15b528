"""simulators: the building on a laptop. Pure physics models stepped by an injected clock
(``physics/``), served over Modbus TCP and RTU through the same ``drivers/`` maps the
controller reads (``modbus.py``), with fault injection (``faults.py``)."""
