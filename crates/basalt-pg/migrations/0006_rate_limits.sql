-- Rate limits every replica enforces together: one token bucket per API key (or principal),
-- refilled by the database's clock.

CREATE TABLE basalt.rate_buckets (
    caller text PRIMARY KEY,
    tokens double precision NOT NULL,
    refilled timestamptz NOT NULL,
    -- Whether the last request took a token.
    allowed boolean NOT NULL
);
