//! The floor of Pingora's engine: pingora-proxy forwarding every request to one backend, no
//! policy; measured by bench/instructions.sh beside bench/floor (hyper) and nginx.
//! Usage: tollgate-floor-pingora LISTEN_ADDR BACKEND_ADDR

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    backend: String,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();
    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.backend.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("LISTEN_ADDR");
    let backend = args.next().expect("BACKEND_ADDR");
    // One worker thread, as the others are measured; SIGTERM exits at once (the benchmark
    // stops the server with it and waits for valgrind's output).
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Floor { backend });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
