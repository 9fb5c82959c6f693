//! Bad plans exit 2 with file:line:column, the key and what was expected,
//! and the target receives nothing.

use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_plan_exits_2_and_sends_nothing() {
    let bed = testbed(Config::default()).await;
    let good = format!(
        "[target]\nbase_url = \"{}\"\n[load]\nusers = 2\nramp_up = \"1s\"\niterations = 1\n[[scenario]]\nname = \"s\"\n[[scenario.step]]\npath = \"/\"\n",
        bed.base_url()
    );
    let cases = [
        (
            "syntax",
            good.replace("users = 2", "users = "),
            "bad.toml:4:9: ",
            "`load.users`",
        ),
        (
            "unknown key",
            good.replace("users = 2", "users = 2\nspeed = 3"),
            "bad.toml:5:1: ",
            "unknown field `speed`",
        ),
        (
            "bad duration",
            good.replace("\"1s\"", "\"1 sec\""),
            "bad.toml:5:11: ",
            "`load.ramp_up`: expected a duration",
        ),
        (
            "negative count",
            good.replace("users = 2", "users = -2"),
            "bad.toml:4:9: ",
            "expected a non-negative integer",
        ),
        (
            "zero iterations",
            good.replace("iterations = 1", "iterations = 0"),
            "bad.toml:6:14: ",
            "`load.iterations`: expected an integer of at least 1",
        ),
        // Journeys: every variable traced, every pattern compiled, every
        // data file read before anything is sent. Line 10 is the step's path.
        (
            "undefined variable",
            good.replace("path = \"/\"", "path = \"/course?id=${course}\""),
            "bad.toml:10:20: ",
            "undefined variable `course`",
        ),
        (
            "variable used before its extraction",
            good.replace(
                "path = \"/\"",
                "path = \"/?t=${tok}\"\n[[scenario.step]]\npath = \"/\"\n[[scenario.step.extract]]\nname = \"tok\"\nheader = \"x-token\"",
            ),
            "bad.toml:10:13: ",
            "`tok` is used before the step that extracts it",
        ),
        (
            "regex that does not compile",
            good.replace(
                "path = \"/\"",
                "path = \"/\"\n[[scenario.step.extract]]\nname = \"t\"\nregex = \"value=(unclosed\"",
            ),
            "bad.toml:13:9: ",
            "extract `t` `regex`: expected a regular expression",
        ),
        (
            "CSS selector that does not parse",
            good.replace(
                "path = \"/\"",
                "path = \"/\"\n[[scenario.step.extract]]\nname = \"t\"\ncss = \"input[name=\"\nattribute = \"value\"",
            ),
            "bad.toml:13:7: ",
            "extract `t` `css`: expected a CSS selector",
        ),
        (
            "missing data file",
            good.replace(
                "[[scenario]]",
                "[[data]]\nname = \"users\"\nfile = \"no-such-users.csv\"\n[[scenario]]",
            ),
            "bad.toml:9:8: ",
            "data `file`: cannot read",
        ),
        (
            "bad think time",
            good.replace("path = \"/\"", "path = \"/\"\nthink = \"uniform(3s, 1s)\""),
            "bad.toml:11:9: ",
            "step `think`: `uniform(3s, 1s)`: the minimum is above the maximum",
        ),
        (
            "framing header",
            good.replace(
                "path = \"/\"",
                "path = \"/\"\nheaders = { \"Content-Length\" = \"5\" }",
            ),
            "bad.toml:11:32: ",
            "step header `Content-Length`: loadfleet frames the body itself",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, text, position, message) in cases {
        let plan = write_plan(dir.path(), "bad.toml", &text);
        let out = dir.path().join(format!("out-{}", what.replace(' ', "-")));
        let line = refused_plan(&plan, &out, what).await;
        assert!(
            line.contains(position) && line.contains(message),
            "{what}: got {line:?}, wanted {position}…{message}"
        );
    }
    assert_eq!(bed.stats().served(), 0, "nothing was sent for any bad plan");
}

/// `loadfleet validate` takes several plans: each is described or its error
/// shown (file:line:column), and the exit code is 2 when any is wrong.
#[test]
fn validate_checks_every_plan_given() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[target]\nbase_url = \"http://127.0.0.1:9\"\n[load]\nusers = 2\niterations = 1\n[[scenario]]\nname = \"s\"\n[[scenario.step]]\npath = \"/\"\n";
    let a = write_plan(dir.path(), "a.toml", good);
    let b = write_plan(
        dir.path(),
        "b.toml",
        &good.replace("users = 2", "userz = 2"),
    );
    let c = write_plan(dir.path(), "c.toml", good);
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let exit = run(
        &loadfleet(),
        &["validate", &arg(&a), &arg(&b), &arg(&c)],
        Duration::from_secs(10),
    );
    assert_eq!(exit.code, 2, "{}", exit.stderr);
    assert_eq!(
        exit.stdout.matches("is valid").count(),
        2,
        "{}",
        exit.stdout
    );
    assert!(
        exit.stderr.contains("b.toml:4:1: unknown field `userz`"),
        "{}",
        exit.stderr
    );
    let ok = run(
        &loadfleet(),
        &["validate", &arg(&a), &arg(&c)],
        Duration::from_secs(10),
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
}
