//! `loadfleet-testbed`: the test target as a standalone server.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// A real HTTP server to aim loadfleet at: per-path latency, counts what it served.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Latency for a path prefix, as PREFIX=DURATION (e.g. /slow=200ms); repeatable.
    #[arg(long = "latency", value_parser = loadfleet_testbed::parse_latency)]
    latencies: Vec<(String, Duration)>,
    /// Serve at most this many requests at once; the rest queue, so latency
    /// rises past this concurrency (a knee for capacity searches).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Latency of paths no --latency prefix matches, e.g. 20ms.
    #[arg(long, value_parser = parse_default_latency, default_value = "0ms")]
    default_latency: Duration,
    /// Print "served N" to stderr this often (e.g. 200ms), to watch load
    /// arrive and stop from outside.
    #[arg(long, value_parser = parse_default_latency)]
    report_every: Option<Duration>,
    /// Stop by itself after this many seconds (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    exit_after: u64,
    /// Serve a Moodle-like site (sessions, login token, sesskey, forum
    /// replies) on /, /login/, /course/, /mod/ and /user/.
    #[arg(long)]
    moodle: bool,
    /// Where the Moodle site keeps its application cache (sessions, course,
    /// page and discussion caches): memory, file:DIR (files with locking,
    /// as Moodle's file store; DIR can be a network mount) or
    /// redis://HOST:PORT (a Redis server).
    #[arg(long, default_value = "memory", value_parser = loadfleet_testbed::moodle::StoreSpec::parse, requires = "moodle")]
    cache: loadfleet_testbed::moodle::StoreSpec,
    /// A modelled cost added to every Moodle page on top of the store's:
    /// none, contended-lock (one lock every page holds: latency grows with
    /// concurrent requests) or flat-cost (the same cost at any concurrency).
    #[arg(long, default_value = "none", value_parser = loadfleet_testbed::moodle::LatencyModel::parse, requires = "moodle")]
    latency_model: loadfleet_testbed::moodle::LatencyModel,
    /// Say `Keep-Alive: timeout=N` (whole seconds, e.g. 1s) and count the
    /// requests that reuse a connection idle for longer (printed at exit).
    #[arg(long, value_parser = parse_default_latency)]
    keep_alive_timeout: Option<Duration>,
    /// Read the second request of every connection, then close it without
    /// an answer: the race of a server's idle timeout with a request.
    #[arg(long)]
    abandon_reused: bool,
}

fn parse_default_latency(s: &str) -> Result<Duration, String> {
    loadfleet_testbed::parse_latency(&format!("/={s}")).map(|(_, d)| d)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let config = loadfleet_testbed::Config {
        latencies: args.latencies,
        default_latency: args.default_latency,
        concurrency: args.concurrency,
        moodle: args
            .moodle
            .then(|| loadfleet_testbed::moodle::MoodleConfig {
                store: args.cache,
                latency_model: args.latency_model,
                ..Default::default()
            }),
        keep_alive_timeout: args.keep_alive_timeout,
        abandon_reused: args.abandon_reused,
        ..loadfleet_testbed::Config::default()
    };
    let bed = loadfleet_testbed::Testbed::start(args.listen, config).await?;
    // On stderr, so scripts can wait for it while stdout stays for results.
    eprintln!("loadfleet-testbed: listening on http://{}", bed.addr());
    let stats = bed.stats_handle();
    if let Some(every) = args.report_every {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                eprintln!("served {}", stats.served());
            }
        });
    }
    if args.exit_after > 0 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = tokio::time::sleep(Duration::from_secs(args.exit_after)) => {}
        }
    } else {
        tokio::signal::ctrl_c().await?;
    }
    let s = bed.stats();
    println!(
        "served {} responses; abandoned {}; late reuses {}",
        s.served(),
        s.abandoned(),
        s.late_reuses()
    );
    bed.stop().await;
    Ok(())
}
