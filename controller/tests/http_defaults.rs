//! `[http]`: headers every step sends, the `Accept-Encoding` asked for, and
//! how much of a body checks and extractions see, with a check that fails
//! past that limit saying so.

use crate::support::*;
use loadfleet_controller::plan::parse;
use loadfleet_testbed::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_wide_headers_reach_every_step_and_a_step_overrides_them() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[target]
base_url = "{}"
[load]
users = 2
iterations = 3
[http]
headers = {{ Referer = "https://site.example/course/", "X-Token" = "plan" }}
accept_encoding = ""
[[scenario]]
name = "s"
[[scenario.step]]
name = "plain"
path = "/echo"
check = {{ body_contains = ['"referer":"https://site.example/course/"', '"x_token":"plan"', '"accept_encoding":""'] }}
[[scenario.step]]
name = "own"
path = "/echo"
headers = {{ "x-token" = "step" }}
check = {{ body_contains = ['"x_token":"step"', '"referer":"https://site.example/course/"'] }}
"#,
        bed.base_url()
    );
    let plan = write_plan(dir.path(), "p.toml", &text);
    let out = dir.path().join("run");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["total"]["requests"], 12);
    assert_eq!(s["total"]["errors"], 0, "{}", s["errors"]);
}

#[test]
fn accept_encoding_is_set_in_one_place() {
    let text = r#"[target]
base_url = "http://127.0.0.1:8080"
[load]
users = 1
[http]
headers = { "Accept-Encoding" = "gzip" }
accept_encoding = "br"
[[scenario]]
name = "s"
[[scenario.step]]
path = "/"
"#;
    let e = parse("plan.toml", text, "plan").unwrap_err().to_string();
    assert!(
        e.starts_with("plan.toml:7:19:") && e.contains("`http.headers` sets `Accept-Encoding` too"),
        "{e}"
    );
    let bad = text
        .replace("headers = { \"Accept-Encoding\" = \"gzip\" }\n", "")
        .replace("accept_encoding = \"br\"", "body_limit = \"3 parsecs\"");
    let e = parse("plan.toml", &bad, "plan").unwrap_err().to_string();
    assert!(
        e.starts_with("plan.toml:6:14:") && e.contains("`http.body_limit`: expected a size"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_see_the_body_up_to_its_limit_and_say_when_it_was_cut() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let plan_with = |limit: &str| {
        format!(
            r#"[target]
base_url = "{}"
[load]
users = 1
iterations = 2
{limit}
[[scenario]]
name = "s"
[[scenario.step]]
name = "small"
path = "/pad/500000"
check = {{ body_contains = ["end of page"] }}
[[scenario.step]]
name = "big"
path = "/pad/2000000"
check = {{ body_contains = ["end of page"] }}
[[scenario.step]]
name = "big gzip"
path = "/gzip/pad/2000000"
check = {{ body_contains = ["end of page"] }}
"#,
            bed.base_url()
        )
    };
    // 1 MiB: the 2 MB pages are cut before their last paragraph.
    let plan = write_plan(
        dir.path(),
        "cut.toml",
        &plan_with("[http]\nbody_limit = \"1MiB\""),
    );
    let out = dir.path().join("cut");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 1, "{}", exit.stderr);
    let s = summary(&out);
    assert_eq!(s["requests"]["small"]["errors"], 0);
    for step in ["big", "big gzip"] {
        assert_eq!(s["requests"][step]["errors_by_kind"]["check"], 2, "{step}");
    }
    let sample = s["errors"]["check"]["sample"].as_str().unwrap();
    eprintln!("check error with a 1 MiB limit: {sample}");
    assert!(
        sample.contains("the body was truncated at 1048576 bytes"),
        "{sample}"
    );
    // The default limit (8 MiB) sees all of them.
    let plan = write_plan(dir.path(), "whole.toml", &plan_with(""));
    let out = dir.path().join("whole");
    let exit = run_plan(&plan, &out).await;
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert_eq!(summary(&out)["total"]["requests"], 6);
}
