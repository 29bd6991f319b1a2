"""`python -m webbuild serve`: a development web server for the site, the JS runtime and built model folders."""

from .app import ServeConfig, make_app
from .server import ServerStartError, check_folders, serve

__all__ = ["ServeConfig", "ServerStartError", "check_folders", "make_app", "serve"]
