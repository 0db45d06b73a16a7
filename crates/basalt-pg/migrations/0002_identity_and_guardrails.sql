-- The identity directory (principals, groups, API and AWS keys as salted hashes and sealed
-- secrets, policies, attachments) and the guardrail configurations of every tenant: what a
-- change through one replica must change for all.

CREATE TABLE basalt.identity (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    -- Raised by every change, so a replica re-reads the directory only when it moved.
    version bigint NOT NULL,
    -- The Directory as JSON.
    directory jsonb NOT NULL
);

CREATE TABLE basalt.guardrails (
    tenant text NOT NULL,
    name text NOT NULL,
    version integer NOT NULL,
    -- The GuardrailConfig as JSON.
    config jsonb NOT NULL,
    PRIMARY KEY (tenant, name, version)
);
