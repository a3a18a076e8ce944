-- Upstream TLS (issue 6): a route's trust/server-name/require settings as JSON of
-- config::UpstreamTls (its credential stays in credential_id), and sidecar listeners.
ALTER TABLE routes ADD COLUMN upstream_tls TEXT;

CREATE TABLE sidecars (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    spec        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
