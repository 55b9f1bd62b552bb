//! The cost of a gRPC hop and nothing else: a tonic server with only the
//! standard health service (`grpc.health.v1.Health/Check` answers SERVING for the
//! empty service name). Load on it measures the ceiling any tonic unary call can
//! reach on this machine; agora's `GetArticle` is compared against it.
//!
//! ```sh
//! bench-grpc-ceiling 127.0.0.1:50099
//! ```

use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "A trivial tonic unary service: grpc.health.v1.Health")]
struct Args {
    /// Where to listen.
    #[arg(env = "AGORA_BENCH_CEILING_ADDR", default_value = "127.0.0.1:50099")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A new reporter says SERVING for "" (the server as a whole).
    let (_reporter, health) = tonic_health::server::health_reporter();
    eprintln!("bench-grpc-ceiling listening on {}", args.addr);
    tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_shutdown(args.addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
