"""The operator's side: catalog, access (users, tokens, BI logins), billing, replays, backups and
the notification worker."""
