-- Every node's logs, partitioned by day (the nodes create each day's partition as its first log
-- arrives; retention drops whole days). `meta` and `bodies` are the records as each node stores
-- them; the columns beside them are what the logs API's queries narrow by.
CREATE TABLE torii_logs (
    gateway text NOT NULL,
    id uuid NOT NULL,
    created_at timestamptz NOT NULL,
    provider text NOT NULL,
    model text,
    meta bytea NOT NULL,
    bodies bytea,
    PRIMARY KEY (gateway, id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX torii_logs_by_model ON torii_logs (gateway, provider, model, id);
