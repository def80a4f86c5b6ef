"""The web dashboard: ``tenure dashboard`` serves :func:`create_app`.

Needs the ``dashboard`` extra (Starlette, Jinja2, uvicorn); htmx is vendored in
``static/`` so the page needs no build step and no other host.
"""

from tenure.dashboard.app import create_app

__all__ = ["create_app"]
