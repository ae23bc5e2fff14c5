"""The HTTP API's routers, one per resource (cases, jobs, models, server); `malenia.server.app` mounts them."""
