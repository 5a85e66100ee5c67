//! Where a user stands in the migration, and the one function that moves
//! them: every writer of `users.state` (the upstream login and the lazy
//! migration in `sql`, the bulk writer and COPY of the jobs, `users add`)
//! asks [`UserState::next`] and writes its answer as a value. SQL carries
//! the state, never the rule.
//!
//! The rules, as the table in [`UserState::next`] spells them:
//! - a user made in Switchyard is `local`, and stays local whatever the
//!   upstream later says about the same id: it never had an account there;
//! - a user a backfill or import lists is `pending` until they log in, and
//!   a listing never moves anyone (a backfill over known users only
//!   refreshes their profile);
//! - a login through the upstream makes a `pending` (or unknown) user a
//!   `shadow`: the upstream still holds their credential;
//! - a captured password (the lazy migration: verified at the upstream and
//!   copied) makes anyone but a local user `migrated`;
//! - a password reset through Switchyard (proof of the mailbox) does the
//!   same for a `pending` or `shadow` user, with no upstream call at all;
//! - nothing moves a `migrated` user back: their credential is local now,
//!   and a downgrade would send their next login to an upstream that may
//!   have been switched off.

use super::UserState;

/// What happened to a user that may move them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Created in Switchyard (`users add`).
    Created,
    /// Listed by a backfill or an import.
    Listed,
    /// Logged in through the upstream (the redirect track, or a proxied
    /// password login that did not migrate them).
    UpstreamLogin,
    /// A password was verified at the upstream and stored locally.
    PasswordCaptured,
    /// The user set a new password here through a reset link.
    PasswordReset,
}

impl Transition {
    pub const ALL: &'static [Transition] = &[
        Transition::Created,
        Transition::Listed,
        Transition::UpstreamLogin,
        Transition::PasswordCaptured,
        Transition::PasswordReset,
    ];
}

impl UserState {
    /// The state a user is in after `event`, from `current` (`None`: no
    /// such user yet, so the event creates them).
    pub fn next(current: Option<UserState>, event: Transition) -> UserState {
        use Transition::*;
        use UserState::*;
        match (current, event) {
            (None, Created) => Local,
            (None, Listed) => Pending,
            (None, UpstreamLogin) => Shadow,
            (None, PasswordCaptured) => Migrated,
            // A reset needs an existing user; were one made by it, it would
            // have had no upstream account.
            (None, PasswordReset) => Local,
            // Never had an upstream account: nothing upstream moves them.
            (Some(Local), _) => Local,
            // Never downgraded.
            (Some(Migrated), _) => Migrated,
            (Some(Pending | Shadow), PasswordCaptured | PasswordReset) => Migrated,
            (Some(Pending | Shadow), UpstreamLogin) => Shadow,
            // Listing or creating an existing user does not move them.
            (Some(state), Created | Listed) => state,
        }
    }

    /// Whether the upstream is still the source of truth for the user's
    /// profile: it is replaced by what the upstream says, rather than only
    /// filling what the local user lacks.
    pub fn upstream_owns_profile(self) -> bool {
        matches!(self, UserState::Pending | UserState::Shadow)
    }
}

#[cfg(test)]
mod tests {
    use super::Transition::{self, *};
    use super::UserState::{self, *};

    /// The whole table, row by row: every current state (and none) against
    /// every event.
    #[test]
    fn the_transition_table() {
        let table: &[(Option<UserState>, [UserState; 5])] = &[
            //              Created   Listed    UpstreamLogin  PasswordCaptured  PasswordReset
            (None, [Local, Pending, Shadow, Migrated, Local]),
            (Some(Local), [Local, Local, Local, Local, Local]),
            (
                Some(Pending),
                [Pending, Pending, Shadow, Migrated, Migrated],
            ),
            (Some(Shadow), [Shadow, Shadow, Shadow, Migrated, Migrated]),
            (
                Some(Migrated),
                [Migrated, Migrated, Migrated, Migrated, Migrated],
            ),
        ];
        assert_eq!(
            table.len(),
            UserState::ALL.len() + 1,
            "every state has a row"
        );
        for (current, row) in table {
            for (event, expected) in Transition::ALL.iter().zip(row) {
                assert_eq!(
                    UserState::next(*current, *event),
                    *expected,
                    "{current:?} after {event:?}"
                );
            }
        }
    }

    #[test]
    fn a_migrated_user_is_never_downgraded() {
        for event in Transition::ALL {
            assert_eq!(UserState::next(Some(Migrated), *event), Migrated);
        }
    }

    #[test]
    fn a_login_then_a_capture_is_a_migration() {
        // The lazy migration of an unknown user: the upsert, then the capture.
        let after_login = UserState::next(None, UpstreamLogin);
        assert_eq!(
            UserState::next(Some(after_login), PasswordCaptured),
            Migrated
        );
    }

    #[test]
    fn only_pending_and_shadow_users_take_the_upstreams_profile() {
        let owned: Vec<UserState> = UserState::ALL
            .iter()
            .copied()
            .filter(|s| s.upstream_owns_profile())
            .collect();
        assert_eq!(owned, [Pending, Shadow]);
    }
}
