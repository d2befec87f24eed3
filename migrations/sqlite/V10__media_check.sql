-- Content security for images (issue 22): WeChat's media_check_async is
-- started when an image upload is committed; its verdict arrives later on
-- the message push callback and is stored with the media row.

-- check_status: NULL = never checked (images moderation off, or the check
-- could not be started yet); 'pending' = started, no verdict yet; then
-- WeChat's suggestion as given ('pass', 'review', 'risky'; what 'review'
-- means is decided when it is read, by moderation.on_review), or 'failed'
-- (WeChat answered the push with an errcode instead of a verdict).
ALTER TABLE media ADD COLUMN check_status TEXT
    CHECK (check_status IN ('pending', 'pass', 'review', 'risky', 'failed'));
-- media_check_async's trace_id: how the pushed verdict finds its row.
ALTER TABLE media ADD COLUMN check_trace_id TEXT;
-- WeChat's label (100 normal, 20002 porn, …), with the verdict.
ALTER TABLE media ADD COLUMN check_label INTEGER;
-- when the check was started / its verdict arrived (ms)
ALTER TABLE media ADD COLUMN check_started_at INTEGER;
ALTER TABLE media ADD COLUMN check_done_at INTEGER;
CREATE UNIQUE INDEX media_by_check_trace ON media(check_trace_id)
    WHERE check_trace_id IS NOT NULL;

-- Every block by content security, for `admin usage` (blocks per day). No
-- user and no content: a count by day, direction and WeChat's label, kept
-- when the account or the media is deleted.
CREATE TABLE moderation_blocks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- the local day (quota.timezone), e.g. '2026-11-25'
    day         TEXT NOT NULL,
    -- input: a chat message; output: a reply; image: an image verdict
    direction   TEXT NOT NULL CHECK (direction IN ('input', 'output', 'image')),
    label       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX moderation_blocks_by_day ON moderation_blocks(day);
