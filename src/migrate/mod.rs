//! Moving users off the upstream.
//!
//! - [`lazy`]: the migration step of a login: verify the password at the
//!   upstream, fetch the profile, store user and credential in one transaction.
//! - [`write_back`]: local changes mirrored to the upstream, so rollback
//!   stays true.

pub mod lazy;
pub mod write_back;
