"""HTTP: the app factory, every route, and the request plumbing around them (auth, hosts, limits)."""
