//! `tollgate-demo-backend`: the YourWeather demo API on one address.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

/// A small, fast weather API for the Tollgate demo and benchmark.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.threads))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate-demo-backend: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "tollgate-demo-backend: cannot listen on {}: {e} (is something else using the port? pass --listen)",
                    args.listen
                );
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            // The first line on stdout is the bound address: tests and scripts read it.
            Ok(addr) => println!("tollgate-demo-backend listening on {addr}"),
            Err(e) => {
                eprintln!("tollgate-demo-backend: {e}");
                return ExitCode::FAILURE;
            }
        }
        tokio::select! {
            res = tollgate_demo_backend::serve(listener) => match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tollgate-demo-backend: {e}");
                    ExitCode::FAILURE
                }
            },
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        }
    })
}
