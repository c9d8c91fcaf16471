"""SSH: resolving a route (ssh -G or the built-in reader, tokens, aliases), logging in (auth,
credentials, host keys, ProxyCommand), the connection and its sessions, the hosts scripts run on,
and the data path (forwarder, window, delivery). Imports only the top-level base modules
(errors, paths, profiles, output, redact), never jupyter/, keeper/, launchers/ or commands/."""
