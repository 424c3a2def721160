//! A TCP relay on a free loopback port that a test can cut, as a network partition between
//! one client and one server would: cutting closes every relayed connection and drops new
//! ones at once until the relay is restored. Other clients of the server are not affected.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use crate::pg::HOST;

/// A running relay to one server port; stops when dropped.
#[derive(Debug)]
pub struct Relay {
    /// The port clients connect to.
    pub port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    cut: bool,
    /// Connections accepted so far (relayed or dropped).
    accepted: usize,
    links: Vec<AbortHandle>,
}

impl Relay {
    /// Relays connections on a new loopback port to `target_port` on the loopback host.
    /// Must be called inside a tokio runtime.
    pub async fn start(target_port: u16) -> std::io::Result<Relay> {
        let listener = TcpListener::bind((HOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let target: SocketAddr = format!("{HOST}:{target_port}")
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, target, Arc::clone(&shared)));
        Ok(Relay {
            port,
            shared,
            accept,
        })
    }

    /// Close every relayed connection and drop new ones until [`Relay::restore`].
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.cut = true;
        for link in state.links.drain(..) {
            link.abort();
        }
    }

    /// Connections accepted so far (a count of the TCP connections the server would see).
    pub fn accepted(&self) -> usize {
        self.shared.lock().accepted
    }

    /// Relay new connections again.
    pub fn restore(&self) {
        self.shared.lock().cut = false;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let mut state = shared.lock();
        state.accepted += 1;
        if state.cut {
            continue; // dropping `client` closes it
        }
        state.links.retain(|link| !link.is_finished());
        let link = tokio::spawn(relay(client, target));
        state.links.push(link.abort_handle());
    }
}

async fn relay(mut client: TcpStream, target: SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(target).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}
