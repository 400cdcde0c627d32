-- Every node's analytics: sums per gateway x unit ('m' minutes, 'h' hours) x provider x model,
-- added to by each node's batches; a batch is added once (torii_rollup_batches remembers which
-- node's which batch was added, in the same transaction).
CREATE TABLE torii_rollups (
    gateway text NOT NULL,
    unit "char" NOT NULL,
    at bigint NOT NULL,
    provider text NOT NULL,
    model text NOT NULL,
    requests bigint NOT NULL,
    errors bigint NOT NULL,
    cached bigint NOT NULL,
    tokens_in bigint NOT NULL,
    tokens_out bigint NOT NULL,
    cost double precision NOT NULL,
    duration_ms bigint NOT NULL,
    PRIMARY KEY (gateway, unit, at, provider, model)
);
CREATE TABLE torii_rollup_batches (
    node bigint NOT NULL,
    seq bigint NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, seq)
);
