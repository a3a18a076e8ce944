-- Symbolon store, version 1. Plain SQL types so the same schema serves PostgreSQL.
CREATE TABLE bundles (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    pem         TEXT NOT NULL,
    require     BOOLEAN NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE domains (
    id          TEXT PRIMARY KEY,
    hostname    TEXT NOT NULL UNIQUE,
    cert_pem    TEXT NOT NULL,
    key_pem     TEXT NOT NULL,
    bundle_id   TEXT REFERENCES bundles(id),
    mtls        TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE credentials (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    cert_pem    TEXT NOT NULL,
    key_pem     TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE routes (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    host          TEXT,
    path_prefix   TEXT NOT NULL,
    upstream      TEXT NOT NULL,
    strip_prefix  BOOLEAN NOT NULL,
    credential_id TEXT REFERENCES credentials(id),
    created_at    TEXT NOT NULL
);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL
);
