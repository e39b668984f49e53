-- The server's log: events and forget records share one position space.
-- `meta` holds the log's id (made when the database is created) and the
-- last position given out; every write takes its row first, which
-- serializes writers (the append point).
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    log TEXT NOT NULL,
    head BIGINT NOT NULL
);

CREATE TABLE events (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    aggregate TEXT NOT NULL,
    action TEXT NOT NULL,
    revision INTEGER NOT NULL,
    sequence BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    payload TEXT,
    forgotten BOOLEAN NOT NULL,
    UNIQUE (aggregate, sequence)
);

CREATE INDEX events_action ON events (action);

CREATE TABLE forgets (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    -- JSON: [[event id, aggregate], ...] of the events it erased.
    events TEXT NOT NULL
);
