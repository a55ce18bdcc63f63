//! A reverse proxy with nothing but the HTTP engine: each client connection (HTTP/1.1,
//! keep-alive) gets one HTTP/1.1 connection to the backend, and every request is forwarded on it
//! as it came (the body streamed, the response streamed back). No routing, no headers added or
//! removed, no policy, no logging, no metrics: what hyper + tokio cost per request by
//! themselves, so `bench/instructions.sh FLOOR=1` can say how much of tollgate-proxy's cost is
//! the engine and how much is the gateway.
//!
//! Usage: tollgate-floor LISTEN_ADDR BACKEND_ADDR

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: tollgate-floor LISTEN_ADDR BACKEND_ADDR";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let backend: SocketAddr = args.next().ok_or(usage)?.parse()?;
    // One thread, as tollgate-proxy runs in the benchmark (TOKIO_WORKER_THREADS=1).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (client, _) = accepted?;
                    tokio::spawn(serve(client, backend));
                }
                _ = term.recv() => return Ok(()),
            }
        }
    })
}

async fn serve(client: TcpStream, backend: SocketAddr) {
    let Ok(upstream) = TcpStream::connect(backend).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let Ok((sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await
    else {
        return;
    };
    tokio::spawn(conn);
    // One request at a time per client connection (HTTP/1.1, no pipelining): the lock is never
    // contended, it only satisfies the borrow checker (the service is `Fn`).
    let sender = std::sync::Arc::new(tokio::sync::Mutex::new(sender));
    let service = service_fn(move |req: Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let mut sender = sender.lock().await;
            let res: Result<Response<Incoming>, hyper::Error> = sender.send_request(req).await;
            res
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await;
}
