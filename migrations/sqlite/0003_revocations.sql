-- Revoked certificates: by fingerprint (exact) or by serial (any certificate with that serial).
CREATE TABLE revocations (
    id           TEXT PRIMARY KEY,
    fingerprint  TEXT UNIQUE,
    serial       TEXT UNIQUE,
    reason       TEXT NOT NULL,
    revoked_at   TEXT NOT NULL,
    subject      TEXT
);
