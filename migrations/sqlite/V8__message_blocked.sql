-- Content security (issue 22): a reply withheld by msgSecCheck is stored as
-- a fixed notice with status 'blocked'. SQLite cannot alter a CHECK
-- constraint, so the messages table is rebuilt: same columns in the same
-- order, every row and its seq kept, the AUTOINCREMENT high-water mark
-- carried over, and the indexes recreated. (No table references messages
-- and no trigger or view reads it, so nothing else needs rebuilding.)

CREATE TABLE messages_new (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content     TEXT NOT NULL,
    model       TEXT,
    status      TEXT NOT NULL CHECK (status IN ('complete', 'generating', 'failed', 'blocked')),
    -- the user message this assistant message answers
    reply_to    TEXT,
    client_msg_id TEXT,
    prompt_tokens INTEGER CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER CHECK (completion_tokens >= 0),
    created_at  INTEGER NOT NULL,
    -- the media a user message carried (JSON, see V5)
    attachments TEXT
);

INSERT INTO messages_new (seq, id, session_id, user_id, role, content, model, status,
                          reply_to, client_msg_id, prompt_tokens, completion_tokens,
                          created_at, attachments)
SELECT seq, id, session_id, user_id, role, content, model, status,
       reply_to, client_msg_id, prompt_tokens, completion_tokens,
       created_at, attachments
FROM messages;

-- seq values are never reused, even those of deleted newest rows
DELETE FROM sqlite_sequence WHERE name = 'messages_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'messages_new', seq FROM sqlite_sequence WHERE name = 'messages';

DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;

CREATE INDEX messages_by_session ON messages(session_id, seq);
CREATE UNIQUE INDEX messages_client_msg_id ON messages(user_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_reply_to ON messages(reply_to) WHERE reply_to IS NOT NULL;
