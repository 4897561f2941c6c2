//! A TCP proxy in front of PostgreSQL that a test cuts and restores: the database "stops" for
//! the service (open connections reset, new ones refused) while the server itself, and the
//! test's own connection to it, stay up. Loopback only.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the proxy binds");
        let addr = listener.local_addr().expect("the proxy's address");
        let up = Arc::new(watch::channel(true).0);
        let state = up.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*state.borrow() {
                    // Closed at once: to the service, the database refuses connections.
                    continue;
                }
                let mut down = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    // Ends when either side closes, when the proxy is cut, or when it is
                    // dropped (the sender goes away and `wait_for` errs).
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up, accept }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// A proxy in front of the server of `database_url`, and the same URL through the proxy.
pub async fn proxied(database_url: &str) -> (Proxy, String) {
    let mut url = url::Url::parse(database_url).expect("a database URL");
    let host = url.host_str().expect("the URL names a host");
    let default_port = if url.scheme().starts_with("postgres") {
        5432
    } else {
        3306
    };
    let upstream = tokio::net::lookup_host((host, url.port().unwrap_or(default_port)))
        .await
        .expect("the database host resolves")
        .next()
        .expect("the database host has an address");
    let proxy = Proxy::start(upstream).await;
    url.set_host(Some("127.0.0.1")).expect("a host can be set");
    url.set_port(Some(proxy.addr.port()))
        .expect("a port can be set");
    (proxy, url.to_string())
}
