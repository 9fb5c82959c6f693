//! User journeys end to end: `loadfleet run` (controller and agents as real
//! processes) against the testbed, whose /echo page reports what it was sent
//! and whose Moodle-like site enforces sessions, tokens and sesskeys.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;
use loadfleet_testbed::moodle::MoodleConfig;

fn moodle_bed() -> Config {
    Config {
        moodle: Some(MoodleConfig::default()),
        ..Config::default()
    }
}

fn step<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &s["requests"][name]
}

fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moodle_journey_runs_with_zero_errors() {
    let bed = testbed(moodle_bed()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = moodle_plan(dir.path(), &bed.base_url(), 6, |t| t);
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(count(&s["total"]["errors"]), 0, "{}", s["total"]);
    assert_eq!(
        count(&s["total"]["requests"]),
        6 * 14,
        "14 requests per journey"
    );
    assert_eq!(count(&step(&s, "View course")["requests"]), 18);
    let site = bed.moodle().unwrap();
    let logins = site.logins();
    assert_eq!(logins.len(), 6, "six accounts logged in: {logins:?}");
    assert!(logins.values().all(|&n| n == 1));
    // The reply was accepted only with the session's sesskey and the form's
    // draft item id; logout only with the sesskey.
    assert_eq!((site.replies(), site.rejected_posts()), (6, 0));
    assert_eq!(site.logouts(), 6);
    assert_eq!(site.failed_logins(), 0);
    assert_eq!(
        site.redirects_to_login(),
        0,
        "the session cookie was carried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_login_token_the_login_fails_its_check_and_the_iteration_ends() {
    let bed = testbed(moodle_bed()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = moodle_plan(dir.path(), &bed.base_url(), 4, |t| {
        t.replace(", logintoken = \"${logintoken}\"", "")
    });
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    let s = summary(&out);
    let login = step(&s, "Login");
    assert_eq!(count(&login["requests"]), 4);
    assert_eq!(
        count(&login["errors_by_kind"]["check"]),
        4,
        "a failed check is counted under its step: {login}"
    );
    assert_eq!(bed.moodle().unwrap().failed_logins(), 4);
    // on_error = "next_iteration": nothing after the failed step ran.
    assert!(
        step(&s, "Frontpage logged").is_null()
            || count(&step(&s, "Frontpage logged")["requests"]) == 0
    );
    assert_eq!(count(&s["total"]["requests"]), 4 * 3);
}

/// Logs in at each iteration and looks at the front page first: with the
/// cookie jar cleared each iteration the front page always says "not logged
/// in"; without clearing, every iteration after the first finds the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_carried_per_user_and_cleared_each_iteration_when_asked() {
    let bed = testbed(moodle_bed()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.csv"),
        "username,password\na,pw-a\nb,pw-b\nc,pw-c\n",
    )
    .unwrap();
    for (clear, front_errors) in [(true, 0), (false, 3 * 2)] {
        let text = format!(
            r#"[target]
base_url = "{base}"
[load]
users = 3
ramp_up = "300ms"
iterations = 3
[session]
clear_cookies_each_iteration = {clear}
[[data]]
name = "users"
file = "users.csv"
mode = "unique"
[[scenario]]
name = "s"
[[scenario.step]]
name = "front"
path = "/"
check = {{ body_contains = ["You are not logged in"] }}
[[scenario.step]]
name = "login page"
path = "/login/index.php"
[[scenario.step.extract]]
name = "token"
regex = 'name="logintoken" value="([^"]+)"'
[[scenario.step]]
name = "login"
path = "/login/index.php"
form = {{ username = "${{users.username}}", password = "${{users.password}}", logintoken = "${{token}}" }}
check = {{ body_contains = ["You are logged in as ${{users.username}}"] }}
"#,
            base = bed.base_url()
        );
        let plan = write_plan(dir.path(), "plan.toml", &text);
        let out = dir.path().join(format!("out-{clear}"));
        let exit = run_plan(&plan, &out).await;
        let s = summary(&out);
        assert_eq!(
            count(&step(&s, "front")["errors_by_kind"]["check"]),
            front_errors,
            "clear_cookies_each_iteration = {clear}: {}",
            exit.stderr
        );
        assert_eq!(
            count(&step(&s, "login")["errors"]),
            0,
            "clear = {clear}: every login worked"
        );
    }
    // Nine logins per run, three per account, each with its own row.
    let logins = bed.moodle().unwrap().logins();
    assert_eq!(logins.get("a"), Some(&6), "{logins:?}");
    assert_eq!(logins.len(), 3);
}

/// What a request carries, seen by the target: an extracted token sent back
/// in a header, query and form encoding, a JSON body, redirects followed
/// within one step, and checks that pass or fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_built_from_extracted_values_and_checked() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[target]
base_url = "{base}"
[load]
users = 2
ramp_up = "100ms"
iterations = 2
[vars]
greeting = "hello world"
[[scenario]]
name = "s"

[[scenario.step]]
name = "get token"
path = "/echo"
[[scenario.step.extract]]
name = "tok"
json = "/token"
[[scenario.step.extract]]
name = "second_id"
json = "/items/1/id"
[[scenario.step.extract]]
name = "rid"
header = "x-request-id"
[[scenario.step.extract]]
name = "absent"
regex = "no such text (\\d+)"
default = "fallback"

[[scenario.step]]
name = "send token"
path = "/echo"
headers = {{ "X-Token" = "${{tok}}" }}
query = {{ q = "${{greeting}}", id = "${{second_id}}", r = "${{rid}}", d = "${{absent}}" }}
check = {{ body_contains = ['"x_token":"tok-12345"', '"q":"hello world"', '"id":"8"', '"r":"req-42"', '"d":"fallback"'] }}

[[scenario.step]]
name = "post form"
path = "/echo"
form = {{ a = "x&y z", b = "${{tok}}" }}
check = {{ body_contains = ['"method":"POST"', '"body":"a=x%26y+z&b=tok-12345"', "application/x-www-form-urlencoded"] }}

[[scenario.step]]
name = "post json"
path = "/echo"
json = {{ token = "${{tok}}", n = 3 }}
check = {{ body_contains = ["tok-12345", '"content_type":"application/json"'], body_matches = ['\\"n\\":3'] }}

[[scenario.step]]
name = "redirects"
path = "/redirect/3"
check = {{ status = [200], body_contains = ['"path":"/echo"'] }}

[[scenario.step]]
name = "too many redirects"
path = "/redirect/3"
max_redirects = 2

[[scenario.step]]
name = "redirect not followed"
path = "/redirect/1"
follow_redirects = false
check = {{ status = [302] }}

[[scenario.step]]
name = "missing is fine"
path = "/status/404"
check = {{ status = [404] }}

[[scenario.step]]
name = "failing check"
path = "/echo"
check = {{ body_matches = ["^never"] }}
"#,
        base = bed.base_url()
    );
    let plan = write_plan(dir.path(), "plan.toml", &text);
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    let s = summary(&out);
    for name in [
        "get token",
        "send token",
        "post form",
        "post json",
        "redirects",
        "redirect not followed",
        "missing is fine",
    ] {
        let st = step(&s, name);
        assert_eq!(count(&st["requests"]), 4, "{name}: {st}");
        assert_eq!(count(&st["errors"]), 0, "{name}: {st}");
    }
    // Each chain 3 -> 2 -> 1 -> /echo is one request in the results. The
    // capped chain stops at /redirect/1, whose redirect would be the third;
    // the unfollowed step asks for /redirect/1 once.
    assert_eq!(bed.stats().served_path("/redirect/3"), 4 + 4);
    assert_eq!(bed.stats().served_path("/redirect/2"), 4 + 4);
    assert_eq!(bed.stats().served_path("/redirect/1"), 4 + 4 + 4);
    let capped = step(&s, "too many redirects");
    assert_eq!(count(&capped["errors_by_kind"]["redirect"]), 4, "{capped}");
    let failing = step(&s, "failing check");
    assert_eq!(count(&failing["requests"]), 4);
    assert_eq!(count(&failing["errors_by_kind"]["check"]), 4, "{failing}");
    assert_eq!(count(&s["total"]["errors"]), 8);
}

/// Think time and pacing stretch the run but never a latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn think_time_and_pacing_are_not_latency() {
    let bed = testbed(Config {
        default_latency: Duration::from_millis(5),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[target]
base_url = "{base}"
[load]
users = 2
ramp_up = "0s"
iterations = 2
[[scenario]]
name = "s"
pacing = "1500ms"
think = "200ms"
[[scenario.step]]
name = "a"
path = "/a"
[[scenario.step]]
name = "b"
path = "/b"
think = "uniform(300ms, 400ms)"
"#,
        base = bed.base_url()
    );
    let plan = write_plan(dir.path(), "plan.toml", &text);
    let out = dir.path().join("out");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    let max = s["total"]["latency_ms"]["max"].as_f64().unwrap();
    assert!(max < 100.0, "latency excludes think time: max {max} ms");
    let secs = s["duration_s"].as_f64().unwrap();
    // Two iterations, each stretched to the 1.5 s pacing (a 200 ms and a
    // 300-400 ms think plus ~10 ms of requests would be ~0.55 s).
    assert!(
        (2.9..4.5).contains(&secs),
        "two paced iterations of 1.5 s took {secs} s"
    );
    assert_eq!(count(&s["total"]["requests"]), 8);
}

/// Two agents, two scenarios weighted 3:1, one account per user: the mix is
/// exact and no account is used twice across the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_rows_are_never_shared_across_agents_and_the_mix_is_exact() {
    let bed = testbed(moodle_bed()).await;
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/moodle");
    std::fs::copy(root.join("users.csv"), dir.path().join("users.csv")).unwrap();
    let login = r#"
[[scenario.step]]
name = "login page"
path = "/login/index.php"
[[scenario.step.extract]]
name = "token"
css = 'input[name="logintoken"]'
attribute = "value"
[[scenario.step]]
name = "login"
path = "/login/index.php"
form = { username = "${users.username}", password = "${users.password}", logintoken = "${token}" }
check = { body_contains = ["You are logged in as ${users.username}"] }
"#;
    let text = format!(
        r#"[target]
base_url = "{base}"
[load]
users = 16
ramp_up = "1s"
iterations = 1
[[data]]
name = "users"
file = "users.csv"
mode = "unique"
[[scenario]]
name = "reader"
weight = 3
{login}
[[scenario.step]]
name = "page"
path = "/mod/page/view.php?id=3"
[[scenario]]
name = "admin"
weight = 1
{login}
[[scenario.step]]
name = "participants"
path = "/user/index.php?id=2"
"#,
        base = bed.base_url()
    );
    let plan = write_plan(dir.path(), "plan.toml", &text);
    let out = dir.path().join("out");
    let (ctl, url) = fleet_controller(&plan, &out, 2);
    let a1 = agent(&url, "eu-west", "a1", &[]);
    let a2 = agent(&url, "us-east", "a2", &[]);
    let exit = exited(ctl, Duration::from_secs(60)).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let _ = (
        exited(a1, Duration::from_secs(20)).await,
        exited(a2, Duration::from_secs(20)).await,
    );
    let s = summary(&out);
    assert_eq!(count(&s["total"]["errors"]), 0, "{}", s["total"]);
    // Both agents ran users.
    for region in ["eu-west", "us-east"] {
        assert_eq!(
            count(&s["regions"][region]["requests"]) % 3,
            0,
            "{region}: whole journeys of 3 requests"
        );
        assert!(
            count(&s["regions"][region]["requests"]) >= 3 * 6,
            "{region}: {}",
            s["regions"][region]
        );
    }
    // 3:1 of 16 users: exactly 12 readers and 4 admins.
    assert_eq!(bed.stats().served_path("/mod/page/view.php"), 12);
    assert_eq!(bed.stats().served_path("/user/index.php"), 4);
    // Fleet user i has row i: the first 16 accounts, each once.
    let logins = bed.moodle().unwrap().logins();
    let mut names: Vec<&String> = logins.keys().collect();
    names.sort();
    let expected: Vec<String> = (1..=16).map(|i| format!("student{i:03}")).collect();
    assert_eq!(names, expected.iter().collect::<Vec<_>>());
    assert!(logins.values().all(|&n| n == 1), "{logins:?}");
}

/// Random data rows (and think times) come from the run's seed: a fresh
/// one each run, recorded in the summary and printed; `seed = N` in the
/// plan replays a run's choices exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_seed_replays_the_random_choices() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = std::iter::once("id\n".to_string())
        .chain((0..10).map(|i| format!("r{i}\n")))
        .collect();
    std::fs::write(dir.path().join("rows.csv"), rows).unwrap();
    // Which rows a run picked, in the order of the file.
    async fn picks(dir: &std::path::Path, name: &str, seed: Option<u64>) -> (u64, Vec<u64>) {
        let bed = testbed(Config::default()).await;
        let mut text = format!(
            "[target]\nbase_url = \"{}\"\n[load]\nusers = 2\niterations = 15\n\
             [[data]]\nname = \"d\"\nfile = \"rows.csv\"\nmode = \"random\"\n\
             [[scenario]]\nname = \"s\"\n[[scenario.step]]\nname = \"row\"\npath = \"/row/${{d.id}}\"\n",
            bed.base_url()
        );
        if let Some(seed) = seed {
            text = format!("seed = {seed}\n{text}");
        }
        let plan = write_plan(dir, &format!("{name}.toml"), &text);
        let out = dir.join(name);
        let exit = run_plan(&plan, &out).await;
        assert_eq!(exit.code, 0, "{}", exit.stderr);
        let s = summary(&out);
        let seed = s["seed"].as_u64().expect("the summary records the seed");
        assert!(
            exit.stdout.contains(&format!("seed {seed}")),
            "{}",
            exit.stdout
        );
        let counts = (0..10)
            .map(|i| bed.stats().served_path(&format!("/row/r{i}")))
            .collect();
        (seed, counts)
    }
    let (first_seed, first) = picks(dir.path(), "first", None).await;
    let (second_seed, _) = picks(dir.path(), "second", None).await;
    assert_ne!(first_seed, second_seed, "each run gets its own seed");
    assert_eq!(first.iter().sum::<u64>(), 30);
    let (replay_seed, replay) = picks(dir.path(), "replay", Some(first_seed)).await;
    assert_eq!(replay_seed, first_seed);
    assert_eq!(replay, first, "the same seed picks the same rows");
}

/// A step that follows redirects is one request but several HTTP
/// exchanges: the exchanges are counted too, per step and in total, so
/// they reconcile with what the target served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_hops_are_counted_as_exchanges() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "hops.toml",
        &plan_toml(
            &bed.base_url(),
            "users = 1\niterations = 4",
            &[("hops", "/redirect/2"), ("plain", "/plain")],
        ),
    );
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["requests"]["hops"]["requests"], 4);
    assert_eq!(s["requests"]["hops"]["exchanges"], 12, "1 + 2 hops each");
    assert_eq!(s["requests"]["plain"]["exchanges"], 4);
    assert_eq!(s["total"]["requests"], 8);
    assert_eq!(s["total"]["exchanges"], 16);
    assert_eq!(
        s["total"]["exchanges"].as_u64().unwrap(),
        bed.stats().served(),
        "exchanges reconcile with what the target served"
    );
    assert!(
        exit.stdout
            .contains("step hops: 4 requests made 12 HTTP exchanges"),
        "{}",
        exit.stdout
    );
}

/// Requests ask for compression as browsers do, and checks and extractions
/// read a compressed body as its text, not as its compressed bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_read_compressed_bodies() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[target]\nbase_url = \"{}\"\n[load]\nusers = 1\niterations = 3\n\
         [[scenario]]\nname = \"s\"\n\
         [[scenario.step]]\nname = \"zipped\"\npath = \"/gzip/page\"\n\
         check = {{ body_contains = [\"loadfleet testbed\", \"GET /gzip/page\"] }}\n\
         extract = [{{ name = \"title\", regex = \"<h1>([a-z ]+)</h1>\" }}]\n\
         [[scenario.step]]\nname = \"brotli\"\npath = \"/br/page\"\n\
         check = {{ body_contains = [\"GET /br/page\", \"end of page\"] }}\n\
         [[scenario.step]]\nname = \"zstd\"\npath = \"/zstd/page\"\n\
         check = {{ body_contains = [\"GET /zstd/page\", \"end of page\"] }}\n\
         [[scenario.step]]\nname = \"echo\"\npath = \"/echo\"\nquery = {{ title = \"${{title}}\" }}\n\
         check = {{ body_contains = [\"\\\"accept_encoding\\\":\\\"gzip, deflate, br, zstd\\\"\", \"loadfleet/\", \"loadfleet testbed\"] }}\n",
        bed.base_url()
    );
    let plan = write_plan(dir.path(), "gzip.toml", &text);
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    let s = summary(&out);
    assert_eq!(s["total"]["errors"], 0, "{}\n{}", s["errors"], exit.stderr);
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    for step in ["zipped", "brotli", "zstd"] {
        assert_eq!(s["requests"][step]["requests"], 3, "{step}");
    }
    // Bytes: what came over the connection, and what the checks read once
    // decoded (the testbed's page, exactly, three times).
    let page = "<!doctype html><html><body><h1>loadfleet testbed</h1><p>GET /gzip/page</p><p>end of page</p></body></html>\n";
    let zipped = &s["requests"]["zipped"];
    assert_eq!(zipped["bytes_decoded"], 3 * page.len(), "{zipped}");
    let received = zipped["bytes_received"].as_u64().unwrap();
    assert!(
        received > 3 * 100,
        "heads and compressed bodies: {received}"
    );
    assert!(
        exit.stdout.contains("received ") && exit.stdout.contains("from the target"),
        "{}",
        exit.stdout
    );
}
