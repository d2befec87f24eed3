-- Chat attachments, text extracted from media, and batch jobs (docs/media.md).

-- The media a user message carried: a JSON array of {id, content_type,
-- filename}, so later turns can mention them without a join (NULL: none).
ALTER TABLE messages ADD COLUMN attachments TEXT;

-- Text extracted from a PDF at commit (or by a batch job), a transcript of
-- audio, or a description of an image; and why extraction failed.
ALTER TABLE media ADD COLUMN extracted_text TEXT;
ALTER TABLE media ADD COLUMN extract_error TEXT;
ALTER TABLE media ADD COLUMN transcript TEXT;
ALTER TABLE media ADD COLUMN description TEXT;
-- Where a committed media came from: an upload, or text-to-speech.
ALTER TABLE media ADD COLUMN origin TEXT NOT NULL DEFAULT 'upload'
    CHECK (origin IN ('upload', 'tts'));

-- A background job over some of a user's media. Survives restarts: items
-- still pending or running are (re)run at the next start.
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    action      TEXT NOT NULL CHECK (action IN ('extract_text', 'describe')),
    state       TEXT NOT NULL CHECK (state IN ('running', 'done')),
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX jobs_by_user ON jobs(user_id, created_at);
CREATE INDEX jobs_running ON jobs(state) WHERE state = 'running';

CREATE TABLE job_items (
    job_id      TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    media_id    TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    result      TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (job_id, idx)
);
