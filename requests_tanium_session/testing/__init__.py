"""A real local Tanium server for tests, demos and users' own tests.

``TaniumServer`` runs on ``127.0.0.1`` in a thread; the pytest plugin (registered as
``tanium_session``) provides the ``tanium_server``, ``tanium_server_tls`` and
``tanium_auth`` fixtures.
"""

from .server import DEFAULT_USER, Clock, Fault, Recorded, TaniumServer, User

__all__ = ["DEFAULT_USER", "Clock", "Fault", "Recorded", "TaniumServer", "User"]
