//! A TCP proxy in front of PostgreSQL that a test can cut and restore, to show what the service
//! does while its database is unreachable.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (tx, _) = watch::channel(true);
        let up = Arc::new(tx);
        let state = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*state.borrow() {
                    continue; // dropped: the connection is refused in effect
                }
                let mut down = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// A proxy in front of `db`'s server, and the database URL that goes through it.
pub async fn proxied(db_url: &str) -> (Proxy, String) {
    let mut url = url::Url::parse(db_url).expect("database URL");
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .expect("resolve database host")
        .next()
        .expect("database address");
    let proxy = Proxy::start(upstream).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.addr.port())).unwrap();
    (proxy, url.to_string())
}
