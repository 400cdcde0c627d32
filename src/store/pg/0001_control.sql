-- The control plane: every control record (table name, key, JSON; NULL when deleted, so the
-- deletion reaches every node) at the global version of the change that last wrote it.
CREATE TABLE torii_control_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version bigint NOT NULL
);
INSERT INTO torii_control_version (version) VALUES (0);
CREATE TABLE torii_control_records (
    kind text NOT NULL,
    key text NOT NULL,
    body bytea,
    version bigint NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX torii_control_records_by_version ON torii_control_records (version);
