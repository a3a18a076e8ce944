-- CRLs attached to an API-managed trust bundle: JSON {"urls": [...], "pem": "...", "expired": "reject"|"warn"}.
ALTER TABLE bundles ADD COLUMN crls TEXT;
