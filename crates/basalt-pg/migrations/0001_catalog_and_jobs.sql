-- The knowledge-base catalog, the ingestion job queue and its spooled uploads: what replicas
-- over one database share. Each knowledge base's index has a schema of its own (kb_…),
-- created when it is first opened.

CREATE TABLE basalt.knowledge_bases (
    tenant text NOT NULL,
    name text NOT NULL,
    -- KbSettings as JSON.
    settings jsonb NOT NULL,
    -- The data key of an encrypted knowledge base, wrapped by the master key (an Envelope).
    data_key jsonb,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE basalt.jobs (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    kb text NOT NULL,
    status text NOT NULL,
    created_at text NOT NULL,
    lease_worker text,
    -- Milliseconds since the Unix epoch, by the database's clock.
    lease_expires_ms bigint,
    -- The Job as JSON, sealed with its knowledge base's data key when that is encrypted.
    record bytea NOT NULL,
    sealed boolean NOT NULL
);
CREATE INDEX jobs_waiting ON basalt.jobs (created_at, id) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_by_kb ON basalt.jobs (tenant, kb, created_at);

CREATE TABLE basalt.uploads (
    job_id text NOT NULL,
    position integer NOT NULL,
    -- The spooled file's name (its position and extension, as `UploadedFile::spool_name`).
    name text NOT NULL,
    -- The file as spooled (sealed when its knowledge base is encrypted).
    bytes bytea NOT NULL,
    PRIMARY KEY (job_id, position)
);
-- Sealed or already compressed: not worth compressing again.
ALTER TABLE basalt.uploads ALTER COLUMN bytes SET STORAGE EXTERNAL;
