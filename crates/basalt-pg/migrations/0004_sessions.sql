-- Conversation sessions every replica sees, so a follow-up may reach any of them. The turns
-- (questions, answers, cited passages) are one record, sealed with the sessions' data key when
-- the replicas have a master key; the rest is what listing and expiry need.

CREATE TABLE basalt.sessions (
    id text PRIMARY KEY,
    kb text NOT NULL,
    owner text NOT NULL,
    -- Seconds since the Unix epoch.
    started bigint NOT NULL,
    turns integer NOT NULL DEFAULT 0,
    last_used timestamptz NOT NULL DEFAULT clock_timestamp(),
    record bytea NOT NULL
);
CREATE INDEX sessions_owner ON basalt.sessions (owner, last_used DESC);
CREATE INDEX sessions_last_used ON basalt.sessions (last_used);

-- The sessions' data key, wrapped by the master key (an envelope, as a knowledge base's is).
CREATE TABLE basalt.session_key (
    id integer PRIMARY KEY CHECK (id = 1),
    envelope jsonb NOT NULL
);
