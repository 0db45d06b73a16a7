-- The audit trail every replica appends to: one linear hash chain (each record's `prev` is the
-- hash of the record before it), appended under a lock so two replicas never fork it.

CREATE TABLE basalt.audit (
    seq bigint PRIMARY KEY,
    -- The Record as JSON, hash included (the hash covers every other field).
    record jsonb NOT NULL
);
