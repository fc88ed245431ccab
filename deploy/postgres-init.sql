-- A login role and a database per rideshare service, each database owned by
-- its service's role, so that no service can read another's tables. The
-- postgres image runs this once, when its data folder is new (compose.yaml).
-- DEVELOPMENT PLACEHOLDERS, NOT SECRETS: the passwords are public.
CREATE ROLE identity LOGIN PASSWORD 'dev-only-NOT-A-SECRET-db-identity';
CREATE DATABASE identity OWNER identity;
CREATE ROLE users LOGIN PASSWORD 'dev-only-NOT-A-SECRET-db-users';
CREATE DATABASE users OWNER users;
CREATE ROLE rides LOGIN PASSWORD 'dev-only-NOT-A-SECRET-db-rides';
CREATE DATABASE rides OWNER rides;
CREATE ROLE dispatch LOGIN PASSWORD 'dev-only-NOT-A-SECRET-db-dispatch';
CREATE DATABASE dispatch OWNER dispatch;
CREATE ROLE payments LOGIN PASSWORD 'dev-only-NOT-A-SECRET-db-payments';
CREATE DATABASE payments OWNER payments;
CREATE ROLE pricing LOGIN PASSWORD 'dev-only-NOT-A-SECRET-db-pricing';
CREATE DATABASE pricing OWNER pricing;
CREATE ROLE notifications LOGIN PASSWORD 'dev-only-NOT-A-SECRET-db-notifications';
CREATE DATABASE notifications OWNER notifications;
