"""Who may call what: API keys with one role each, checked on every RPC, and the audit log
of every write with the key that made it."""
