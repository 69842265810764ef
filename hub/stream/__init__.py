"""The grid status as a stream: ``WS /ws/grid-status`` (:mod:`.routes`), fed by one broadcaster for
all clients (:mod:`.broadcaster`), started with the app (:mod:`.service`)."""

from hub.stream.broadcaster import Broadcaster, StreamSettings, stream_settings_from_env
from hub.stream.routes import PATH, ROUTES
from hub.stream.service import live_services

__all__ = ["PATH", "ROUTES", "Broadcaster", "StreamSettings", "live_services", "stream_settings_from_env"]
