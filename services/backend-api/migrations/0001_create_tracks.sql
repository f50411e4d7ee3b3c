-- The tracks the API stores. One file per schema version, applied in order of the number in its name,
-- each in its own transaction (store.go: Migrate).
CREATE TABLE tracks (
    id         text        PRIMARY KEY,
    title      text        NOT NULL,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
