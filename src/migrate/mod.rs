//! Moving users off the upstream.
//!
//! - [`hashes`]: password hashes imported from other systems (bcrypt,
//!   PBKDF2, scrypt, argon2), verified once and upgraded to argon2id.
//! - [`lazy`]: the migration step of a login: verify the password at the
//!   upstream, fetch the profile, store user and credential in one transaction.

pub mod hashes;

pub mod lazy;
