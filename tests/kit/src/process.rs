//! Programs a test starts for itself (aiosmtpd, moto, a private
//! `redis-server`): a free port to hand them, a child that is killed when
//! dropped, and the wait until it answers.

use std::future::Future;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A port that was free a moment ago. If another process takes it before
/// the program binds it, the program fails to start and
/// [`Spawned::wait_until`] says so, rather than the test talking to a
/// stranger.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether the Python module `import` can be imported. Missing, the test
/// is skipped with a notice naming the PyPI `package`; with `CI` set it
/// fails instead, since `.ci/run` installs it.
pub fn python_module(import: &str, package: &str) -> bool {
    let installed = Command::new("python3")
        .args(["-c", &format!("import {import}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "{package} is not installed, and CI must run this test (.ci/run installs it)"
        );
        eprintln!("skipped: {package} is not installed (pip install '{package}')");
    }
    installed
}

/// A started program, silent, killed (and reaped) when dropped.
pub struct Spawned {
    child: std::process::Child,
    what: String,
}

impl Spawned {
    pub fn start(command: &mut Command) -> Self {
        let what = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        Self { child, what }
    }

    /// Waits until `ready` says the program answers; fails if it exits
    /// first or does not answer within `timeout`.
    pub async fn wait_until<F, Fut>(&mut self, timeout: Duration, mut ready: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if ready().await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited before it answered: {status}", self.what);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never answered",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (e.g. `-STOP`, `-CONT`) to the program.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {}", self.what);
    }

    /// Kills the program and reaps it (also done when dropped).
    pub fn kill(&mut self) {
        // A stopped process is continued first: SIGKILL alone does not end
        // it everywhere.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}
