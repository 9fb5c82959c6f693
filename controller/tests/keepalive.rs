//! Kept-alive connections against servers that close them: a request raced
//! by the server's idle close is sent once more on a new connection,
//! whatever its method (as browsers do), and counted; an idle connection is
//! not reused past the server's `Keep-Alive: timeout=N`.

use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_raced_by_the_servers_close_is_resent_once_whatever_its_method() {
    // The second request on every connection is read, then the connection
    // closed without an answer.
    let bed = testbed(Config {
        abandon_reused: true,
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[target]\nbase_url = \"{}\"\ntimeout = \"5s\"\n[load]\nusers = 4\niterations = 30\n\
         [[scenario]]\nname = \"s\"\n[[scenario.step]]\nname = \"post\"\nmethod = \"POST\"\npath = \"/form\"\n\
         form = {{ a = \"1\" }}\n",
        bed.base_url()
    );
    let plan = write_plan(dir.path(), "p.toml", &text);
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    let post = &s["requests"]["post"];
    let (requests, errors, retries, exchanges) = (
        post["requests"].as_u64().unwrap(),
        post["errors"].as_u64().unwrap(),
        post["retries"].as_u64().unwrap(),
        post["exchanges"].as_u64().unwrap(),
    );
    let abandoned = bed.stats().abandoned();
    eprintln!(
        "120 POSTs: {requests} requests, {errors} errors, {retries} resent; the server abandoned {abandoned} and served {}",
        bed.stats().served()
    );
    assert_eq!((requests, errors), (120, 0));
    assert_eq!(bed.stats().served(), 120);
    // Every request after a connection's first was abandoned once and resent.
    assert!(abandoned >= 100, "the race happened: {abandoned}");
    assert_eq!(
        retries, abandoned,
        "each abandoned request was resent, once"
    );
    assert_eq!(exchanges, requests + retries, "each attempt is an exchange");
    assert!(
        exit.stdout.contains(&format!(
            "step post: {retries} of 120 requests were sent a second time on a new connection"
        )),
        "{}",
        exit.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_not_reused_past_the_servers_keep_alive_timeout() {
    let bed = testbed(Config {
        keep_alive_timeout: Some(Duration::from_secs(1)),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Per user: a (new connection), 1.1 s idle, b (new: past the timeout),
    // 0.2 s idle, a again (the same connection), 1.1 s, b (new).
    let text = format!(
        "[target]\nbase_url = \"{}\"\ntimeout = \"5s\"\n[load]\nusers = 2\niterations = 2\n\
         [[scenario]]\nname = \"s\"\n\
         [[scenario.step]]\nname = \"a\"\npath = \"/a\"\nthink = \"1100ms\"\n\
         [[scenario.step]]\nname = \"b\"\npath = \"/b\"\nthink = \"200ms\"\n",
        bed.base_url()
    );
    let plan = write_plan(dir.path(), "p.toml", &text);
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    let connections = bed.stats().first_request_times().len();
    let late = bed.stats().late_reuses();
    eprintln!(
        "{} requests on {connections} connections; {late} reused past the server's timeout",
        s["total"]["requests"]
    );
    assert_eq!(s["total"]["requests"], 8);
    assert_eq!(
        late, 0,
        "no request went out on a connection past timeout=1"
    );
    assert_eq!(
        connections, 6,
        "a new connection after each 1.1 s pause, the same one after 0.2 s"
    );
}
