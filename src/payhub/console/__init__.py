"""The web console (docs/console.md): server-rendered pages on the HTTP face for finance admins, operators and
auditors, signed in with an API token (:mod:`payhub.console.sessions`, :mod:`payhub.console.web`)."""
