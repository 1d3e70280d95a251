-- The purge of expired authorization-server records (Store::purge_expired_oauth) finds
-- them by expiry, and a grant's remaining codes by grant.
CREATE INDEX oauth_access_tokens_expiry ON oauth_access_tokens (expires_at);
CREATE INDEX oauth_codes_expiry ON oauth_codes (expires_at);
CREATE INDEX oauth_codes_grant ON oauth_codes (grant_id);
CREATE INDEX oauth_refresh_tokens_expiry ON oauth_refresh_tokens (expires_at);
CREATE INDEX oauth_grants_created ON oauth_grants (created_at);
