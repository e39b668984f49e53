-- The last forget position whose erased payloads a VACUUM of `events`
-- covered (`--scrub-forgotten`), shared by every server instance: an
-- instance skips a vacuum another already did, and a server restarted
-- after a crash vacuums if a forget was left uncovered.
CREATE TABLE scrubbed (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position BIGINT NOT NULL
);

INSERT INTO scrubbed (id, position) VALUES (1, 0);
