"""The demo's console: on 127.0.0.1, with three documented users (docs/console.md).
These passwords are public: never use them on a real gateway."""

from __future__ import annotations

from controller.console.auth import Role, User, hash_password
from controller.console.settings import ConsoleSettings

#: (user, password, role) of the demo.
DEMO_USERS = (("viewer", "viewer-demo", Role.VIEWER),
              ("operator", "operator-demo", Role.OPERATOR),
              ("admin", "admin-demo", Role.ADMIN))


def demo_console(port: int, host: str = "127.0.0.1") -> ConsoleSettings:
    return ConsoleSettings(
        enabled=True, host=host, port=port,
        users=tuple(User(name, role, hash_password(password))
                    for name, password, role in DEMO_USERS))
