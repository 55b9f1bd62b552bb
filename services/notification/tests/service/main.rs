//! The notification service's integration tests: its event handler, API, email
//! worker and digest on a real database, SQLite always and PostgreSQL when
//! `AGORA_TEST_DATABASE_URL` is set.

mod helpers;

mod api;
mod digest;
mod email;
mod events;
