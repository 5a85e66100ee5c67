//! Moving users off the upstream.
//!
//! - [`lazy`]: the migration step of a login: verify the password at the
//!   upstream, fetch the profile, store user and credential in one transaction.

pub mod lazy;
