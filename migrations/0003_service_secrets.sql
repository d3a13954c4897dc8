-- Secrets the service's replicas share, created once per database.

create table service_secrets (
  name       text primary key,
  secret     bytea not null check (octet_length(secret) >= 32),
  created_at timestamptz not null default now()
);

-- Signs page tokens (HMAC-SHA256), so a client cannot forge the keyset
-- cursor a token carries. 32 random bytes from two v4 UUIDs (gen_random_uuid
-- is in core PostgreSQL since 13; pgcrypto is not assumed). Replacing it
-- only invalidates the page tokens in flight.
insert into service_secrets (name, secret)
values ('page_token',
        decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
