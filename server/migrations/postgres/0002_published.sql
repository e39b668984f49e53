-- `--nats`: the last position published to NATS, so that a restarted
-- server goes on where it stopped (the batch in flight at a crash is
-- published again; NATS drops it by its Nats-Msg-Id within JetStream's
-- duplicate window).
CREATE TABLE published (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position BIGINT NOT NULL
);

INSERT INTO published (id, position) VALUES (1, 0);
