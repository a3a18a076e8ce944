-- Authorization: policies, identities, per-route settings, gateway-wide rules, quota use.
CREATE TABLE policies (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    spec        TEXT NOT NULL,          -- JSON: access, rate_limit, quota, self_service
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE identities (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    fingerprint   TEXT UNIQUE,          -- SHA-256 of the bound client certificate
    token_sha256  TEXT UNIQUE,          -- SHA-256 of the token; the token itself is never stored
    policy_id     TEXT REFERENCES policies(id),
    active        BOOLEAN NOT NULL,
    expires_at    TEXT,
    created_at    TEXT NOT NULL
);

ALTER TABLE routes ADD COLUMN authz TEXT;   -- JSON RouteAuthz, NULL = none

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE quota_use (
    identity_id   TEXT PRIMARY KEY,
    window_start  BIGINT NOT NULL,
    used          BIGINT NOT NULL
);
