-- esl-sync's Postgres logins and database (PostgreSQL 15 or newer).
--
-- Run it once, with psql, as the server's administrator (on RDS: the master user),
-- connected to any existing database:
--
--   psql "host=HOST port=5432 dbname=postgres user=ADMIN sslmode=require" \
--     -v app_password='…' -v reader_password='…' -f deploy/postgres-roles.sql
--
-- It creates
--   esl_sync_app     the app's login: owns the database esl_sync, so the deploy's migration
--                    creates the tables and the poller and sender write them (the secret
--                    DatabaseUrlSecretArn holds this login);
--   esl_sync_reader  a read-only login for the dispatcher and the internet-facing webhook,
--                    which only read (the optional secret ReadOnlyDatabaseUrlSecretArn);
--   esl_sync         the database, owned by esl_sync_app.
-- Tables the migrations create later are readable by esl_sync_reader (default privileges).
-- tests/integration/test_postgres_roles.py runs this file on PostgreSQL 15.

\set ON_ERROR_STOP on

CREATE ROLE esl_sync_app LOGIN PASSWORD :'app_password';
CREATE ROLE esl_sync_reader LOGIN PASSWORD :'reader_password';

-- An administrator that is not a superuser (RDS) may give a database only to a role it
-- belongs to.
GRANT esl_sync_app TO CURRENT_USER;
CREATE DATABASE esl_sync OWNER esl_sync_app;
-- Nobody else connects to it.
REVOKE ALL ON DATABASE esl_sync FROM PUBLIC;
GRANT CONNECT ON DATABASE esl_sync TO esl_sync_app, esl_sync_reader;

\connect esl_sync

-- Since PostgreSQL 15 the public schema belongs to the database's owner (esl_sync_app),
-- and nobody else may create in it.
GRANT USAGE ON SCHEMA public TO esl_sync_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO esl_sync_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE esl_sync_app IN SCHEMA public
    GRANT SELECT ON TABLES TO esl_sync_reader;
