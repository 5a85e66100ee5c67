//! The fake's listener: connections it accepts are dropped, and new ones
//! refused, while the fake is in [`Mode::Down`].

use super::*;

// ---------------------------------------------------------------------------
// The transport: a listener and connections that `Mode::Down` resets
// ---------------------------------------------------------------------------

pub(super) struct OutageListener {
    pub(super) inner: TcpListener,
    pub(super) shared: Arc<Shared>,
}

impl axum::serve::Listener for OutageListener {
    type Io = Killable;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            let epoch = {
                let state = self.shared.lock();
                (state.mode != Mode::Down).then_some(state.connection_epoch)
            };
            // Down: close at once; the client's request meets a reset.
            let Some(epoch) = epoch else {
                drop(stream);
                continue;
            };
            let killed = Box::pin(self.shared.kill_connections.clone().notified_owned());
            return (
                Killable {
                    io: stream,
                    shared: self.shared.clone(),
                    epoch,
                    killed,
                    dead: false,
                },
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails every read and write once the fake goes down,
/// which makes the server drop (reset) it.
pub(super) struct Killable {
    io: TcpStream,
    shared: Arc<Shared>,
    epoch: u64,
    /// Ready when the fake goes down; polling it registers this
    /// connection's task to be woken then.
    killed: Pin<Box<OwnedNotified>>,
    dead: bool,
}

impl Killable {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.dead {
            let notified = self.killed.as_mut().poll(cx).is_ready();
            let state = self.shared.lock();
            self.dead =
                notified || state.mode == Mode::Down || state.connection_epoch != self.epoch;
        }
        if self.dead {
            Err(io::ErrorKind::ConnectionReset.into())
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for Killable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
