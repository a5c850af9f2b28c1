"""payhub's HTTP face: one ASGI app (:func:`payhub.http.app.create_app`) with health, metrics, webhooks and API v1,
served by ``payhub run`` when ``[http] listen`` is set and by ``payhub serve`` (:mod:`payhub.http.server`)."""
