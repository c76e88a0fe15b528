# Runs on MicroPython: validate config file texts with the firmware's validator and print
# one JSON line per text: the resulting config and the error messages.
import json
import sys

from submeter import config

with open(sys.argv[1]) as f:
    texts = json.load(f)
for text in texts:
    cfg, errors = config.parse(text, 3)
    print(json.dumps({"config": cfg, "errors": errors}))
