-- The origins a browser application runs on (Auth0's "Allowed Web Origins"):
-- where a `response_mode=web_message` result may be posted, and which
-- origins the token endpoint answers with CORS for this client. A JSON
-- array of `scheme://host[:port]`, like the other URI lists.
ALTER TABLE clients ADD COLUMN web_origins TEXT NOT NULL DEFAULT '[]';
