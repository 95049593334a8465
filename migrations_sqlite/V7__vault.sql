-- Version 7 (this edition): the key vault's own facts. `key_check` holds a
-- known marker sealed under the master key, so a wrong or missing key is
-- caught when the server starts, even before any tenant has saved a secret.
CREATE TABLE vault_meta (
    name TEXT PRIMARY KEY NOT NULL CHECK (length(name) <= 64),
    value TEXT NOT NULL CHECK (length(value) <= 1024),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
