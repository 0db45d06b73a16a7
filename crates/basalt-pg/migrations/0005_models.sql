-- The registry of remote models (`basalt models add`) every replica and machine shares: the
-- JSON of a data directory's models.json (where each model's key is, never the key), one row.

CREATE TABLE basalt.models (
    id integer PRIMARY KEY CHECK (id = 1),
    registry jsonb NOT NULL
);
