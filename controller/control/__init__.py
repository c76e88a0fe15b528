"""The control loop: strategies (pure functions of a snapshot) composed by precedence,
executed through verified writes. See ``loop.py``."""
