"""`attnmap view`: slides with their heatmaps in the browser (OpenSeadragon, served from 127.0.0.1)."""

from attnmap.view.app import NotFoundError, ViewerContent
from attnmap.view.export import export_static
from attnmap.view.server import make_server
from attnmap.view.sources import ScoreSet, ViewSlide, discover

__all__ = [
    "NotFoundError",
    "ScoreSet",
    "ViewSlide",
    "ViewerContent",
    "discover",
    "export_static",
    "make_server",
]
