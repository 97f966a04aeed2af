"""`attnmap view`: slides with their heatmaps in the browser (OpenSeadragon, served from 127.0.0.1)."""

from attnmap.view.app import NotFoundError, ViewerContent
from attnmap.view.export import export_static
from attnmap.view.server import make_server
from attnmap.view.sources import Discovery, ScoreSet, UnshownSlide, ViewSlide, discover, find_slides

__all__ = [
    "Discovery",
    "NotFoundError",
    "ScoreSet",
    "ViewSlide",
    "ViewerContent",
    "UnshownSlide",
    "discover",
    "export_static",
    "find_slides",
    "make_server",
]
