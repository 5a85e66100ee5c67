-- The audit trail filtered by the user an event is about (`/admin/audit?user=`,
-- a user's page), newest first: without it the filter reads the whole
-- trail, which holds every login.
CREATE INDEX audit_events_user_id ON audit_events (user_id, id);
