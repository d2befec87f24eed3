-- The hourly sweep looks for uploads left pending for over a day; a partial
-- index keeps that scan proportional to the pending rows, not to all media.
CREATE INDEX media_pending ON media(created_at) WHERE state = 'pending';
