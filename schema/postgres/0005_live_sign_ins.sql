-- 0005: every API call checks that its access token's sign-in (refresh-token family) is still live, so revoking a
-- sign-in ends its access tokens at once instead of at their `exp`. A family's live head is its one token neither
-- rotated nor revoked; this index holds only those rows, so the check is one small index probe however long the
-- family's rotation history grows.
CREATE INDEX refresh_tokens_live_head ON refresh_tokens (user_id, family_id) WHERE revoked_at IS NULL AND rotated_at IS NULL;
