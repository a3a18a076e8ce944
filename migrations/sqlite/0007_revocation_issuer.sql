-- A serial number identifies a certificate only together with its issuer: serial entries now
-- name the issuer by the SHA-256 of its SubjectPublicKeyInfo (hex). Rows from before keep a NULL
-- issuer and match any issuer (fail closed) until they are replaced.
CREATE TABLE revocations_new (
    id           TEXT PRIMARY KEY,
    fingerprint  TEXT UNIQUE,
    serial       TEXT,
    issuer       TEXT,
    reason       TEXT NOT NULL,
    revoked_at   TEXT NOT NULL,
    subject      TEXT,
    UNIQUE (issuer, serial)
);
INSERT INTO revocations_new (id, fingerprint, serial, issuer, reason, revoked_at, subject)
    SELECT id, fingerprint, serial, NULL, reason, revoked_at, subject FROM revocations;
DROP TABLE revocations;
ALTER TABLE revocations_new RENAME TO revocations;
