//! The plan grammar: what is accepted, and the exact error (file:line:column,
//! key, expectation) for what is not.

use std::time::Duration;

use loadfleet_controller::plan::{LoadModel, RateStage, RunBound, parse};

const GOOD: &str = r#"name = "smoke"
[target]
base_url = "http://127.0.0.1:8080"
timeout = "5s"

[load]
users = 20
ramp_up = "30s"
iterations = 1

[[scenario]]
name = "browse"
weight = 2

[[scenario.step]]
name = "front page"
path = "/"

[[scenario.step]]
method = "post"
path = "/login?x=1"
headers = { "X-Test" = "1" }

[[scenario]]
name = "again"

[[scenario.step]]
name = "front page"
path = "/"
"#;

#[test]
fn accepts_the_documented_format() {
    let p = parse("plan.toml", GOOD, "ignored").unwrap();
    assert_eq!(p.name, "smoke");
    assert_eq!(p.target.timeout, Duration::from_secs(5));
    assert_eq!(
        p.load,
        LoadModel::Closed {
            users: 20,
            ramp_up: Duration::from_secs(30),
            bound: RunBound::Iterations(1)
        }
    );
    assert_eq!(p.scenarios.len(), 2);
    assert_eq!(p.scenarios[0].weight, 2);
    assert_eq!(p.scenarios[1].weight, 1, "weight defaults to 1");
    let login = &p.scenarios[0].steps[1];
    assert_eq!(
        (login.wire.method.as_str(), login.name.as_str()),
        ("POST", "POST /login?x=1")
    );
    assert_eq!(
        login
            .wire
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect::<Vec<_>>(),
        [("X-Test", "1")]
    );
    // Steps with one name share one id (one row in results), across scenarios.
    assert_eq!(p.step_names, vec!["front page", "POST /login?x=1"]);
    assert_eq!(p.scenarios[1].steps[0].id, 0);
}

#[test]
fn name_defaults_to_the_file_name_and_duration_mode_parses() {
    let text = GOOD
        .replace("name = \"smoke\"\n", "")
        .replace("iterations = 1", "duration = \"2m\"");
    let p = parse("x/checkout.toml", &text, "checkout").unwrap();
    assert_eq!(p.name, "checkout");
    assert!(
        matches!(p.load, LoadModel::Closed { bound: RunBound::Duration(d), .. } if d == Duration::from_secs(120))
    );
    assert_eq!(p.target.timeout, Duration::from_secs(5));
}

fn err(text: &str) -> String {
    parse("plan.toml", text, "plan").unwrap_err().to_string()
}

#[test]
fn unknown_key_names_the_key_and_position() {
    let e = err(&GOOD.replace("users = 20", "users = 20\nuserz = 5"));
    assert!(e.starts_with("plan.toml:8:1: "), "{e}");
    assert!(
        e.contains("unknown field `userz`") && e.contains("expected one of"),
        "{e}"
    );
}

#[test]
fn bad_duration_says_what_is_expected() {
    let e = err(&GOOD.replace("ramp_up = \"30s\"", "ramp_up = \"30x\""));
    assert!(e.starts_with("plan.toml:8:11: "), "{e}");
    assert!(
        e.contains("`load.ramp_up`") && e.contains("\"30x\"") && e.contains("\"30s\""),
        "{e}"
    );
}

#[test]
fn negative_count_is_rejected() {
    let e = err(&GOOD.replace("users = 20", "users = -3"));
    assert!(e.starts_with("plan.toml:7:9: "), "{e}");
    assert!(
        e.contains("`load.users`") && e.contains("-3") && e.contains("non-negative integer"),
        "{e}"
    );
}

#[test]
fn zero_users_and_zero_iterations_are_rejected() {
    let e = err(&GOOD.replace("users = 20", "users = 0"));
    assert!(
        e.starts_with("plan.toml:7:9: ") && e.contains("`load.users`"),
        "{e}"
    );
    let e = err(&GOOD.replace("iterations = 1", "iterations = 0"));
    assert!(
        e.starts_with("plan.toml:9:14: ") && e.contains("`load.iterations`"),
        "{e}"
    );
}

#[test]
fn toml_syntax_error_has_a_position() {
    let e = err(&GOOD.replace("users = 20", "users = "));
    assert!(e.starts_with("plan.toml:7:"), "{e}");
}

#[test]
fn iterations_and_duration_together_are_rejected() {
    let e = err(&GOOD.replace("iterations = 1", "iterations = 1\nduration = \"1m\""));
    assert!(e.starts_with("plan.toml:10:12: "), "{e}");
    assert!(e.contains("either `iterations` or `duration`"), "{e}");
}

#[test]
fn bad_target_and_steps_are_rejected() {
    let e = err(&GOOD.replace("http://127.0.0.1:8080", "ftp://127.0.0.1"));
    assert!(
        e.starts_with("plan.toml:3:12: ") && e.contains("`target.base_url`"),
        "{e}"
    );
    let e = err(&GOOD.replace("path = \"/login?x=1\"", "path = \"login\""));
    assert!(
        e.starts_with("plan.toml:21:8: ") && e.contains("starting with `/`"),
        "{e}"
    );
    let e = err(&GOOD.replace("method = \"post\"", "method = \"PO ST\""));
    assert!(
        e.starts_with("plan.toml:20:10: ") && e.contains("HTTP method"),
        "{e}"
    );
    let e = err(&GOOD.replace("timeout = \"5s\"", "timeout = \"0s\""));
    assert!(e.contains("`target.timeout`"), "{e}");
    let e = err(&GOOD.replace("weight = 2", "weight = 0"));
    assert!(
        e.starts_with("plan.toml:13:10: ") && e.contains("`weight`"),
        "{e}"
    );
}

#[test]
fn plans_need_a_scenario_with_steps() {
    let cut = GOOD.find("[[scenario]]").unwrap();
    let e = err(&GOOD[..cut]);
    assert!(e.contains("at least one [[scenario]]"), "{e}");
    let e = err(&GOOD.replace(
        "name = \"again\"\n\n[[scenario.step]]\nname = \"front page\"\npath = \"/\"\n",
        "name = \"again\"\n",
    ));
    assert!(
        e.contains("scenario \"again\": expected at least one [[scenario.step]]"),
        "{e}"
    );
    let e = err(&GOOD.replace("name = \"again\"", "name = \"browse\""));
    assert!(e.contains("used twice"), "{e}");
}

#[test]
fn unreadable_file_is_a_plan_error() {
    let e = loadfleet_controller::plan::load(std::path::Path::new("/nonexistent/plan.toml"))
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/plan.toml:0:0: cannot read plan"),
        "{e}"
    );
}

fn with_load(load: &str) -> String {
    let start = GOOD.find("[load]").unwrap();
    let end = GOOD.find("[[scenario]]").unwrap();
    format!("{}[load]\n{load}\n\n{}", &GOOD[..start], &GOOD[end..])
}

#[test]
fn open_model_grammar() {
    let p = parse(
        "plan.toml",
        &with_load("rate = 200\nduration = \"30s\"\nmax_users = 50\nmax_wait = \"2s\""),
        "p",
    )
    .unwrap();
    assert_eq!(
        p.load,
        LoadModel::Open {
            stages: vec![RateStage {
                from: 200.0,
                to: 200.0,
                duration: Duration::from_secs(30)
            }],
            max_users: 50,
            max_wait: Duration::from_secs(2),
        }
    );
    // Defaults: 1000 users, arrivals wait up to the request timeout.
    let p = parse(
        "plan.toml",
        &with_load("rate = 2.5\nduration = \"1m\""),
        "p",
    )
    .unwrap();
    assert!(
        matches!(p.load, LoadModel::Open { max_users: 1000, max_wait, .. } if max_wait == Duration::from_secs(5))
    );
    // Stages ramp linearly from the previous rate, starting at 0.
    let p = parse(
        "plan.toml",
        &with_load("stages = [{ rate = 100, duration = \"10s\" }, { rate = 100, duration = \"1m\" }, { rate = 0, duration = \"10s\" }]"),
        "p",
    )
    .unwrap();
    let LoadModel::Open { stages, .. } = &p.load else {
        panic!("open")
    };
    let shape: Vec<(f64, f64, u64)> = stages
        .iter()
        .map(|s| (s.from, s.to, s.duration.as_secs()))
        .collect();
    assert_eq!(
        shape,
        [(0.0, 100.0, 10), (100.0, 100.0, 60), (100.0, 0.0, 10)]
    );
    assert_eq!(p.scheduled_duration(), Some(Duration::from_secs(80)));
}

#[test]
fn open_model_errors() {
    let cases = [
        (
            "users = 5\nrate = 10\nduration = \"1s\"",
            "plan.toml:8:8: ",
            "either `users` (closed model) or `rate` (open model)",
        ),
        (
            "rate = 10\niterations = 3",
            "plan.toml:8:14: ",
            "`load.iterations`: not allowed with `rate`",
        ),
        (
            "rate = 10",
            "plan.toml:6:1: ",
            "the open model needs `duration",
        ),
        (
            "rate = 0\nduration = \"1s\"",
            "plan.toml:7:8: ",
            "arrivals per second above 0",
        ),
        (
            "rate = -5\nduration = \"1s\"",
            "plan.toml:7:8: ",
            "non-negative integer, found -5",
        ),
        (
            "rate = 10\nduration = \"1s\"\nmax_users = 0",
            "plan.toml:9:13: ",
            "`load.max_users`",
        ),
        (
            "users = 3\niterations = 1\nmax_users = 4",
            "plan.toml:9:13: ",
            "`load.max_users`: not allowed with `users",
        ),
        (
            "stages = [{ rate = 10 }]",
            "plan.toml:7:",
            "missing field `duration`",
        ),
        (
            "stages = [{ rate = 10, duration = \"1s\", users = 3 }]",
            "plan.toml:7:",
            "not both kinds",
        ),
    ];
    for (load, position, message) in cases {
        let e = err(&with_load(load));
        assert!(
            e.starts_with(position) && e.contains(message),
            "{load:?}: got {e}, wanted {position}…{message}"
        );
    }
}

#[test]
fn sweeps_are_lists_of_users_or_rates() {
    let p = parse(
        "plan.toml",
        &with_load("users = [20, 30, 40]\nramp_up = \"30s\"\niterations = 1\ncooldown = \"10s\""),
        "p",
    )
    .unwrap();
    let sweep = p.sweep.clone().expect("a sweep");
    assert_eq!(sweep.values, [20.0, 30.0, 40.0]);
    assert_eq!(sweep.cooldown, Duration::from_secs(10));
    assert_eq!(p.at(30.0).users(), 30);
    assert!(p.at(30.0).sweep.is_none());
    let p = parse(
        "plan.toml",
        &with_load("rate = [100, 200]\nduration = \"10s\""),
        "p",
    )
    .unwrap();
    assert_eq!(p.sweep.as_ref().unwrap().values, [100.0, 200.0]);
    let LoadModel::Open { stages, .. } = p.at(200.0).load else {
        panic!("open")
    };
    assert_eq!((stages[0].from, stages[0].to), (200.0, 200.0));
    let e = err(&with_load("users = []\niterations = 1"));
    assert!(e.contains("at least one value"), "{e}");
    let e = err(&with_load("users = [10, 2.5]\niterations = 1"));
    assert!(e.contains("`load.users`: expected an integer"), "{e}");
}

#[test]
fn closed_stages_grammar() {
    let p = parse(
        "plan.toml",
        &with_load("stages = [{ users = 10, duration = \"30s\" }, { users = 0, duration = \"10s\" }]\ngraceful_stop = \"5s\""),
        "p",
    )
    .unwrap();
    assert_eq!(
        p.load,
        LoadModel::Staged {
            stages: vec![(10, Duration::from_secs(30)), (0, Duration::from_secs(10))],
            graceful_stop: Duration::from_secs(5),
        }
    );
    assert_eq!(p.users(), 10);
    let p = parse(
        "plan.toml",
        &with_load("stages = [{ users = 3, duration = \"1m\" }]"),
        "p",
    )
    .unwrap();
    assert!(
        matches!(p.load, LoadModel::Staged { graceful_stop, .. } if graceful_stop == Duration::from_secs(30))
    );
    let cases = [
        (
            "stages = [{ users = 3, duration = \"1s\" }, { rate = 5, duration = \"1s\" }]",
            "not both kinds",
        ),
        (
            "stages = [{ users = 3, duration = \"1s\" }]\nramp_up = \"1s\"",
            "`load.ramp_up`: not allowed with `stages`",
        ),
        (
            "users = 3\niterations = 1\nstages = [{ users = 3, duration = \"1s\" }]",
            "`load.stages`: not allowed with `users`",
        ),
        (
            "stages = [{ users = 0, duration = \"1s\" }]",
            "at least one stage with users",
        ),
        (
            "stages = [{ users = 3, from = 1, duration = \"1s\" }]",
            "`from` is for rate stages",
        ),
        (
            "stages = [{ rate = 3, from = -1, duration = \"1s\" }]",
            "`from` -1 is not a rate",
        ),
    ];
    for (load, message) in cases {
        let e = err(&with_load(load));
        assert!(e.contains(message), "{load:?}: {e}");
    }
}

#[test]
fn a_rate_stage_may_start_where_it_says() {
    let p = parse(
        "plan.toml",
        &with_load(
            "stages = [{ rate = 10, duration = \"2s\" }, { from = 20, rate = 20, duration = \"1s\" }, { rate = 0, duration = \"1s\" }]",
        ),
        "x",
    )
    .unwrap();
    let LoadModel::Open { stages, .. } = &p.load else {
        panic!("{:?}", p.load)
    };
    let levels: Vec<(f64, f64)> = stages.iter().map(|s| (s.from, s.to)).collect();
    // Without `from` a stage ramps from where the one before ended.
    assert_eq!(levels, [(0.0, 10.0), (20.0, 20.0), (20.0, 0.0)]);
    assert!(
        p.load.describe().contains("20→20/s over 1s"),
        "{}",
        p.load.describe()
    );
}

#[test]
fn a_ramp_longer_than_the_run_is_refused_with_the_users_that_would_never_start() {
    // 10 users, one every 2 s, for 5 s: users 0, 1 and 2 would start.
    let plan = GOOD
        .replace("users = 20", "users = 10")
        .replace("ramp_up = \"30s\"", "ramp_up = \"20s\"")
        .replace("iterations = 1", "duration = \"5s\"");
    let e = err(&plan);
    assert!(e.starts_with("plan.toml:8:11: "), "{e}");
    assert!(e.contains("only 3 of 10 users"), "{e}");
    // A sweep is checked at every value.
    let e = err(&plan.replace("users = 10", "users = [1, 10]"));
    assert!(e.contains("only 3 of 10 users"), "{e}");
    // Every user starting before the end is fine: the last starts at 18 s.
    assert!(
        parse(
            "plan.toml",
            &plan.replace("duration = \"5s\"", "duration = \"19s\""),
            "p"
        )
        .is_ok()
    );
    assert!(parse("plan.toml", &plan.replace("users = 10", "users = 1"), "p").is_ok());
}

#[test]
fn connect_timeout_is_above_zero_and_at_most_the_timeout() {
    let ok = GOOD.replace(
        "timeout = \"5s\"",
        "timeout = \"5s\"\nconnect_timeout = \"2s\"",
    );
    let p = parse("plan.toml", &ok, "p").unwrap();
    assert_eq!(p.target.connect_timeout, Some(Duration::from_secs(2)));
    let e = err(&GOOD.replace(
        "timeout = \"5s\"",
        "timeout = \"5s\"\nconnect_timeout = \"6s\"",
    ));
    assert!(
        e.starts_with("plan.toml:5:19: ") && e.contains("at most `timeout` (5s)"),
        "{e}"
    );
}

/// GOOD with `extra` appended (after its last step).
fn with(extra: &str) -> String {
    format!("{GOOD}{extra}")
}

#[test]
fn metrics_are_numbered_per_name_and_reach_every_step() {
    let p = parse(
        "plan.toml",
        &with(
            r#"
[[scenario.step.metric]]
name = "db_reads"
regex = 'DB reads/writes: (\d+)'
unit = "reads"

[[scenario.step.metric]]
name = "time"
header = "x-time"
scale = 1000

[[metric]]
name = "db_reads"
regex = 'reads: (\d+)'
unit = "reads"
"#,
        ),
        "ignored",
    )
    .unwrap();
    let names: Vec<&str> = p.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["db_reads", "time"]);
    assert_eq!(p.metrics[1].scale, 1000.0);
    // The plan-wide metric reaches every step; the last step reads its own
    // db_reads (not the plan's) and its time.
    for s in &p.scenarios[0].steps {
        assert_eq!(s.wire.metrics.len(), 1, "{}", s.name);
        assert_eq!(s.wire.metrics[0].id, 0);
    }
    let last = &p.scenarios[1].steps[0];
    let ids: Vec<u32> = last.wire.metrics.iter().map(|m| m.id).collect();
    assert_eq!(ids, [0, 1]);
    let own = last.wire.metrics[0].source.as_ref().unwrap();
    assert!(
        matches!(&own.from, Some(loadfleet_proto::v1::extract::From::Regex(r)) if r.starts_with("DB")),
        "{own:?}"
    );
}

#[test]
fn a_bad_metric_says_where_and_what_was_expected() {
    let e = err(&with("\n[[metric]]\nname = \"x\"\nregex = '(a'\n"));
    assert!(
        e.starts_with("plan.toml:33:9: ") && e.contains("metric `x` `regex`"),
        "{e}"
    );
    let e = err(&with(
        "\n[[metric]]\nname = \"x\"\nregex = 'a'\nscale = 0\n",
    ));
    assert!(
        e.starts_with("plan.toml:34:9: ") && e.contains("expected a number above 0"),
        "{e}"
    );
    let e = err(&with(
        "\n[[metric]]\nname = \"x\"\nregex = '(a)'\nunit = \"ms\"\n\
         \n[[scenario.step.metric]]\nname = \"x\"\nregex = '(b)'\n",
    ));
    assert!(
        e.contains("metric `x`: read elsewhere with unit \"ms\""),
        "{e}"
    );
    let e = err(&with("\n[[metric]]\nname = \"x\"\n"));
    assert!(
        e.contains("metric `x`: expected exactly one of `regex`, `css`, `json` and `header`"),
        "{e}"
    );
    let e = err(&with(
        "\n[[metric]]\nname = \"x\"\nregex = '(a)'\n\n[thresholds]\noverall = [\"metric.y p95 < 3\"]\n",
    ));
    assert!(
        e.contains("no metric is named \"y\"; expected one of [\"x\"]"),
        "{e}"
    );
    let e = err(&with(
        "\n[[metric]]\nname = \"x\"\nregex = '(a)'\n\n[thresholds]\noverall = [\"metric.x p95 < 3ms\"]\n",
    ));
    assert!(e.contains("expected a number in the metric's unit"), "{e}");
}

const PHASED: &str = r#"name = "phased"
[target]
base_url = "http://127.0.0.1:8080"

[[phase]]
name = "warm-up"
scenarios = ["warm"]
load = { users = 3, ramp_up = "1s", iterations = 1 }

[[phase]]
name = "test"
scenarios = ["main"]
load = { users = 5, duration = "10s", throttle = "60/min" }

[[scenario]]
name = "warm"

[[scenario.step]]
name = "front"
path = "/"

[[scenario]]
name = "main"

[[scenario.step]]
name = "login"
path = "/login"

[[scenario.step]]
name = "front"
path = "/"

[thresholds]
overall = ["p95 < 1s"]
[thresholds.steps]
"login" = ["p99 < 2s"]
"#;

#[test]
fn phases_are_plans_of_their_own_with_their_own_steps() {
    let p = parse("plan.toml", PHASED, "x").unwrap();
    assert_eq!(p.phases.len(), 2);
    assert_eq!(p.step_names, ["front", "login"]);
    let warm = p.phase(0).unwrap();
    assert!(warm.phases.is_empty());
    assert_eq!(warm.step_names, ["front"]);
    assert_eq!(warm.scenarios.len(), 1);
    assert_eq!(
        warm.load,
        LoadModel::Closed {
            users: 3,
            ramp_up: Duration::from_secs(1),
            bound: RunBound::Iterations(1)
        }
    );
    // The login rule is about a step the warm-up does not run.
    assert_eq!(warm.thresholds.rules.len(), 1);
    let test = p.phase(1).unwrap();
    assert_eq!(test.step_names, ["login", "front"]);
    let ids: Vec<u32> = test.scenarios[0].steps.iter().map(|s| s.wire.id).collect();
    assert_eq!(ids, [0, 1], "renumbered in the phase's own order");
    assert_eq!(test.throttle_per_s, Some(1.0));
    let login_rule = test.thresholds.rules.iter().find(|r| r.step.is_some());
    assert_eq!(login_rule.and_then(|r| r.step), Some(0));
    assert!(p.phase(2).is_none());
}

#[test]
fn bad_phases_say_where_and_what_was_expected() {
    let e = err(&PHASED.replace(
        "[[phase]]\nname = \"warm-up\"",
        "[load]\nusers = 1\n\n[[phase]]\nname = \"warm-up\"",
    ));
    assert!(
        e.starts_with("plan.toml:5:1: ") && e.contains("gives each phase its own `load`"),
        "{e}"
    );
    let e = err(&PHASED.replace("scenarios = [\"warm\"]", "scenarios = [\"wram\"]"));
    assert!(
        e.starts_with("plan.toml:7:14: ") && e.contains("no scenario is named \"wram\""),
        "{e}"
    );
    // One phase may sweep (each value runs every phase); two may not.
    let one = PHASED.replace("users = 5,", "users = [5, 6],");
    assert!(parse("plan.toml", &one, "x").unwrap().sweep.is_some());
    let e = err(&one.replace("users = 3,", "users = [3, 4],"));
    assert!(e.contains("already sweeps its load"), "{e}");
    let e = err(&PHASED.replace("name = \"test\"", "name = \"warm-up\""));
    assert!(e.contains("unique among the phases"), "{e}");
    let without = PHASED.replace("[[phase]]", "[[phasex]]");
    assert!(err(&without).contains("unknown field"), "{}", err(&without));
    // A load per scenario in a phase: the scenarios it names, each known.
    let per = PHASED.replace(
        "scenarios = [\"main\"]\nload = { users = 5, duration = \"10s\", throttle = \"60/min\" }",
        "loads = { main = { users = 5, duration = \"10s\" }, warm = { rate = 2, duration = \"10s\" } }",
    );
    let p = parse("plan.toml", &per, "x").unwrap();
    assert_eq!(p.phases[1].scenarios, [0, 1]);
    let test = p.phase(1).unwrap();
    let LoadModel::Scenarios(loads) = &test.load else {
        panic!("{:?}", test.load)
    };
    let names: Vec<(&str, &str)> = loads
        .iter()
        .map(|l| (l.name.as_str(), test.scenarios[l.scenario].name.as_str()))
        .collect();
    assert_eq!(names, [("warm", "warm"), ("main", "main")]);
    assert!(loads[0].rate.is_some() && loads[1].rate.is_none());
    let e = err(&per.replace("main = { users", "mian = { users"));
    assert!(
        e.starts_with("plan.toml:12:")
            && e.contains("phase \"test\" `loads`: no scenario is named \"mian\""),
        "{e}"
    );
    let e = err(&per.replace(
        "name = \"test\"\n",
        "name = \"test\"\nscenarios = [\"main\"]\n",
    ));
    assert!(
        e.contains("a phase with `loads` runs the scenarios named there"),
        "{e}"
    );
    let e = err(&PHASED.replace(
        "load = { users = 5, duration = \"10s\", throttle = \"60/min\" }\n",
        "",
    ));
    assert!(
        e.starts_with("plan.toml:10:1: ")
            && e.contains(
                "phase \"test\": expected a `load` ([phase.load]) or a load per scenario"
            ),
        "{e}"
    );
}

#[test]
fn the_http_version_is_checked_against_the_target() {
    let with = |http: &str, base: &str| {
        GOOD.replace("http://127.0.0.1:8080", base)
            .replace("[load]", &format!("[http]\n{http}\n\n[load]"))
    };
    let p = parse(
        "plan.toml",
        &with("version = \"h2c\"", "http://127.0.0.1:8080"),
        "x",
    )
    .unwrap();
    assert_eq!(p.target.version, loadfleet_proto::v1::HttpVersion::H2c);
    let e = err(&with("version = \"h2c\"", "https://127.0.0.1:8443"));
    assert!(
        e.contains("\"h2c\" is HTTP/2 over plain TCP, and the target is https"),
        "{e}"
    );
    let e = err(&with("version = \"3\"", "https://127.0.0.1:8443"));
    assert!(
        e.contains("expected \"auto\", \"1.1\", \"2\" or \"h2c\", found \"3\""),
        "{e}"
    );
}
