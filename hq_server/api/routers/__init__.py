"""One router per domain; :func:`hq_server.api.app.create_app` composes them."""
