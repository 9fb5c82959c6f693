//! `loadfleet import jmeter` of a plan in the shapes real JMeter plans
//! have (HTTP Request Defaults and a Header Manager at TestPlan level, a
//! Flow Control Action pausing with a Uniform Random Timer as JMeter's
//! templates do, Transaction, ForEach over a regex extractor's every match,
//! Loop, If with a `__jexl3` condition, Once Only, Random, Interleave,
//! Throughput and Recording controllers, a run-time variable in a path):
//! imported, then run against the test target, which counts what each
//! controller sent, and how long the pauses kept the users.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use loadfleet_testbed::Config;

fn sp(name: &str, value: &str) -> String {
    format!("<stringProp name=\"{name}\">{value}</stringProp>")
}

/// An element with properties and the hashTree of its children.
fn el(tag: &str, name: &str, props: &str, children: &str) -> String {
    format!(
        "<{tag} testclass=\"{tag}\" testname=\"{name}\" enabled=\"true\">{props}</{tag}><hashTree>{children}</hashTree>"
    )
}

fn get(name: &str, path: &str, children: &str) -> String {
    el(
        "HTTPSamplerProxy",
        name,
        &format!(
            "{}{}{}",
            sp("HTTPSampler.path", path),
            sp("HTTPSampler.method", "GET"),
            "<boolProp name=\"HTTPSampler.follow_redirects\">true</boolProp>"
        ),
        children,
    )
}

fn regex(refname: &str, re: &str, match_no: &str, default: &str) -> String {
    el(
        "RegexExtractor",
        refname,
        &format!(
            "{}{}{}{}{}",
            sp("RegexExtractor.refname", refname),
            sp("RegexExtractor.regex", re),
            sp("RegexExtractor.template", "$1$"),
            sp("RegexExtractor.match_number", match_no),
            sp("RegexExtractor.default", default)
        ),
        "",
    )
}

fn headers(name: &str, pairs: &[(&str, &str)]) -> String {
    let items: String = pairs
        .iter()
        .map(|(n, v)| {
            format!(
                "<elementProp name=\"\" elementType=\"Header\">{}{}</elementProp>",
                sp("Header.name", n),
                sp("Header.value", v)
            )
        })
        .collect();
    el(
        "HeaderManager",
        name,
        &format!("<collectionProp name=\"HeaderManager.headers\">{items}</collectionProp>"),
        "",
    )
}

/// The plan: defaults naming `host:port` at TestPlan level, 2 users × 3 loops.
fn jmx(host: &str, port: &str) -> String {
    let defaults = el(
        "ConfigTestElement",
        "HTTP Request Defaults",
        &format!(
            "{}{}{}",
            sp("HTTPSampler.domain", host),
            sp("HTTPSampler.port", port),
            sp("HTTPSampler.protocol", "http")
        ),
        "",
    );
    let transaction = el(
        "TransactionController",
        "Home and list",
        "<boolProp name=\"TransactionController.includeTimers\">false</boolProp>",
        &format!(
            "{}{}",
            get(
                "home",
                "/home",
                &format!(
                    "{}{}",
                    headers("own headers", &[("X-Both", "sampler")]),
                    regex("bugId", "(GET)", "1", "none")
                )
            ),
            get(
                "list",
                "/list/a/b/c",
                &regex("ids", r"/([abc])\b", "-1", "")
            )
        ),
    );
    let foreach = el(
        "ForeachController",
        "each id",
        &format!(
            "{}{}<boolProp name=\"ForeachController.useSeparator\">true</boolProp>",
            sp("ForeachController.inputVal", "ids"),
            sp("ForeachController.returnVal", "id")
        ),
        &get("item", "/item/${id}", ""),
    );
    let loop_ = el(
        "LoopController",
        "twice",
        &sp("LoopController.loops", "2"),
        &get("loop", "/loop", ""),
    );
    let if_ = el(
        "IfController",
        "three ids",
        &format!(
            "{}<boolProp name=\"IfController.useExpression\">true</boolProp>",
            sp(
                "IfController.condition",
                "${__jexl3(\"${ids_matchNr}\" == \"3\",)}"
            )
        ),
        &get("yes", "/yes", ""),
    );
    let never = el(
        "IfController",
        "never",
        &sp("IfController.condition", "${__jexl3(1 == 2)}"),
        &el(
            "HTTPSamplerProxy",
            "tracker",
            &format!(
                "{}{}{}",
                sp("HTTPSampler.domain", "www.example.com"),
                sp("HTTPSampler.path", "/track"),
                sp("HTTPSampler.method", "GET")
            ),
            "",
        ),
    );
    let once = el("OnceOnlyController", "first", "", &get("once", "/once", ""));
    let random = el(
        "RandomController",
        "any",
        "",
        &format!("{}{}", get("a", "/pick/a", ""), get("b", "/pick/b", "")),
    );
    let interleave = el(
        "InterleaveControl",
        "turns",
        "",
        &format!("{}{}", get("ta", "/turn/a", ""), get("tb", "/turn/b", "")),
    );
    let throughput = el(
        "ThroughputController",
        "half",
        "<intProp name=\"ThroughputController.style\">1</intProp>\
         <boolProp name=\"ThroughputController.perThread\">true</boolProp>\
         <FloatProperty><name>ThroughputController.percentThroughput</name><value>50.0</value></FloatProperty>",
        &get("half", "/half", ""),
    );
    let think = el(
        "TestAction",
        "Think Time",
        &format!(
            "<intProp name=\"ActionProcessor.action\">1</intProp><intProp name=\"ActionProcessor.target\">0</intProp>{}",
            sp("ActionProcessor.duration", "0")
        ),
        &el(
            "UniformRandomTimer",
            "Pause",
            &format!(
                "{}{}",
                sp("ConstantTimer.delay", "100"),
                sp("RandomTimer.range", "50")
            ),
            "",
        ),
    );
    let recorded = el(
        "RecordingController",
        "Recording Controller",
        "",
        &format!(
            "{}{}",
            get("recorded", "/recorded", ""),
            get("bug", "/bug/${bugId}", "")
        ),
    );
    let group = el(
        "ThreadGroup",
        "Users",
        &format!(
            "{}{}<elementProp name=\"ThreadGroup.main_controller\" elementType=\"LoopController\">{}</elementProp>",
            sp("ThreadGroup.num_threads", "2"),
            sp("ThreadGroup.ramp_time", "0"),
            sp("LoopController.loops", "3")
        ),
        &[
            transaction,
            foreach,
            loop_,
            if_,
            never,
            once,
            random,
            interleave,
            throughput,
            think,
            recorded,
        ]
        .concat(),
    );
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<jmeterTestPlan version=\"1.2\"><hashTree>{}</hashTree></jmeterTestPlan>",
        el(
            "TestPlan",
            "flow",
            "",
            &format!(
                "{defaults}{}{group}",
                headers("plan headers", &[("X-Plan", "plan"), ("X-Both", "plan")])
            )
        )
    )
}

/// HTTP Request Defaults naming the test target's host and port.
fn defaults_of(url: &str) -> String {
    let (host, port) = url.trim_start_matches("http://").split_once(':').unwrap();
    el(
        "ConfigTestElement",
        "defaults",
        &format!(
            "{}{}",
            sp("HTTPSampler.domain", host),
            sp("HTTPSampler.port", port)
        ),
        "",
    )
}

fn import(jmx: &Path, out: &Path) -> Exit {
    run(
        &loadfleet(),
        &[
            "import",
            "jmeter",
            jmx.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jmeter_controllers_pauses_and_plan_level_defaults_import_as_jmeter_runs_them() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = bed.base_url();
    let (host, port) = url
        .trim_start_matches("http://")
        .split_once(':')
        .expect("host:port");
    let file = dir.path().join("flow.jmx");
    std::fs::write(&file, jmx(host, port)).unwrap();
    let out = dir.path().join("flow.toml");
    let exit = import(&file, &out);
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let plan = std::fs::read_to_string(&out).unwrap();
    println!("{plan}\n{}", exit.stderr);
    // The TestPlan's defaults name the target, not the one sampler that
    // names another host.
    assert!(
        plan.contains(&format!("base_url = \"http://{host}:{port}\"")),
        "{plan}"
    );
    // The sampler that names another host takes the defaults' port, as
    // JMeter fills a sampler's empty fields from its defaults.
    assert!(plan.contains(&format!("url = \"http://www.example.com:{port}/track\"")));
    for shape in [
        "group = \"Home and list\"",
        "for_each = \"ids\"\nas = \"id\"",
        "repeat = 2",
        "${ids_matchNr} == ",
        // The sampler's own Header Manager wins over the plan's, per name.
        "X-Both = \"sampler\"",
        "X-Plan = \"plan\"",
        "once = true",
        "one_of = true",
        "in_turn = true",
        "percent = 50",
        "think = \"uniform(100ms, 150ms)\"",
        "match = \"all\"",
        // A run-time variable stays one.
        "path = \"/bug/${bugId}\"",
        "path = \"/item/${id}\"",
    ] {
        assert!(plan.contains(shape), "missing {shape:?} in\n{plan}");
    }
    assert!(!plan.contains("$${"), "nothing frozen into literal text");

    let run_dir = dir.path().join("run");
    let exit = run_plan(&out, &run_dir).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    // Before any load, the run says where it sends: the target and the
    // other host a step names (whose condition never holds here).
    assert!(
        exit.stderr.contains(&format!(
            "requests go to: http://{host}:{port} (13 steps), http://www.example.com:{port} (1 step)"
        )),
        "{}",
        exit.stderr
    );
    let served = bed.stats().paths();
    println!("served: {served:?}");
    let n = |p: &str| served.get(p).copied().unwrap_or(0);
    // 2 users × 3 iterations.
    for (path, want) in [
        ("/home", 6),
        ("/list/a/b/c", 6),
        ("/item/a", 6),
        ("/item/b", 6),
        ("/item/c", 6),
        ("/loop", 12),
        ("/yes", 6),
        ("/once", 2),
        // Per user: a, b, a.
        ("/turn/a", 4),
        ("/turn/b", 2),
        // Each user's passes 2 (of 1 to 3) : one each.
        ("/half", 2),
        ("/recorded", 6),
        ("/bug/GET", 6),
        ("/track", 0),
    ] {
        assert_eq!(n(path), want, "{path}");
    }
    assert_eq!(n("/pick/a") + n("/pick/b"), 6, "one of two per iteration");
    let s = summary(&run_dir);
    assert_eq!(s["total"]["errors"], 0, "{}", s["errors"]);
    assert_eq!(s["requests"]["Home and list"]["requests"], 6);
    // Each user pauses 100 to 150 ms per iteration, 3 times in a row: the
    // run cannot be shorter than 0.3 s (without the pause it takes a few
    // milliseconds).
    let secs = s["duration_s"].as_f64().unwrap();
    assert!(secs >= 0.3, "the pauses held the users: {secs} s");
}

fn plan_of(sampler_and_more: &str, users: &str, loops: &str) -> String {
    let group = el(
        "ThreadGroup",
        "Users",
        &format!(
            "{}{}<elementProp name=\"ThreadGroup.main_controller\" elementType=\"LoopController\">{}</elementProp>",
            sp("ThreadGroup.num_threads", users),
            sp("ThreadGroup.ramp_time", "0"),
            sp("LoopController.loops", loops)
        ),
        sampler_and_more,
    );
    format!(
        "<?xml version=\"1.0\"?>\n<jmeterTestPlan version=\"1.2\"><hashTree>{}</hashTree></jmeterTestPlan>",
        el("TestPlan", "p", "", &group)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_boundary_and_css_extractors_counters_and_header_assertions_import() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let counter = el(
        "CounterConfig",
        "count",
        &format!(
            "{}{}{}<boolProp name=\"CounterConfig.per_user\">true</boolProp>",
            sp("CounterConfig.name", "c"),
            sp("CounterConfig.start", "10"),
            sp("CounterConfig.incr", "5")
        ),
        "",
    );
    let json = el(
        "JSONPostProcessor",
        "json",
        &format!(
            "{}{}{}",
            sp("JSONPostProcessor.referenceNames", "tok;second"),
            sp("JSONPostProcessor.jsonPathExprs", "$.token;$.items[1].id"),
            sp("JSONPostProcessor.match_numbers", "1;1")
        ),
        "",
    );
    let boundary = el(
        "BoundaryExtractor",
        "boundary",
        &format!(
            "{}{}{}",
            sp("BoundaryExtractor.refname", "b"),
            sp("BoundaryExtractor.lboundary", "&quot;token&quot;:&quot;"),
            sp("BoundaryExtractor.rboundary", "&quot;")
        ),
        "",
    );
    let header_check = el(
        "ResponseAssertion",
        "json reply",
        "<collectionProp name=\"Asserion.test_strings\"><stringProp name=\"1\">Content-Type: application/json</stringProp></collectionProp>\
         <stringProp name=\"Assertion.test_field\">Assertion.response_headers</stringProp>\
         <intProp name=\"Assertion.test_type\">2</intProp>",
        "",
    );
    let css = el(
        "HtmlExtractor",
        "css",
        &format!(
            "{}{}{}",
            sp("HtmlExtractor.refname", "h"),
            sp("HtmlExtractor.expr", "h1"),
            sp("HtmlExtractor.match_number", "1")
        ),
        "",
    );
    let listener = el("ResultCollector", "View Results Tree", "", "");
    let defaults = defaults_of(&bed.base_url());
    let text = plan_of(
        &[
            defaults,
            counter,
            get("echo", "/echo", &[json, boundary, header_check].concat()),
            get("use", "/tok/${tok}/${second}/${b}/${c}", ""),
            get("page", "/", &css),
            listener,
        ]
        .concat(),
        "1",
        "2",
    );
    let file = dir.path().join("extract.jmx");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("extract.toml");
    // Only a listener is left out: --strict accepts it.
    let exit = run(
        &loadfleet(),
        &[
            "import",
            "jmeter",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--strict",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    assert!(
        exit.stderr
            .contains("LEFT OUT (the load is the same): ResultCollector"),
        "{}",
        exit.stderr
    );
    let plan = std::fs::read_to_string(&out).unwrap();
    println!("{plan}");
    for shape in [
        "json = \"/token\"",
        "json = \"/items/1/id\"",
        "css = 'h1'",
        "set = { c = \"${__iteration} * 5 + 5\" }",
        "(?m)content-type: application/json",
    ] {
        assert!(plan.contains(shape), "missing {shape:?} in\n{plan}");
    }
    let run_dir = dir.path().join("run");
    let exit = run_plan(&out, &run_dir).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    let served = bed.stats().paths();
    println!("served {served:?}");
    // The counter: 10 in the first iteration, 15 in the second; every
    // extracted value in the path, read as JMeter reads it.
    assert_eq!(served.get("/tok/tok-12345/8/tok-12345/10"), Some(&1));
    assert_eq!(served.get("/tok/tok-12345/8/tok-12345/15"), Some(&1));
    let s = summary(&run_dir);
    assert_eq!(s["total"]["errors"], 0, "{}", s["errors"]);
}

#[test]
fn a_plan_that_does_not_validate_is_kept_as_a_draft_and_deep_nesting_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A variable only a script would set: the plan cannot validate.
    let text = plan_of(
        &[
            el(
                "ConfigTestElement",
                "defaults",
                &sp("HTTPSampler.domain", "127.0.0.1"),
                "",
            ),
            get("scripted", "/x/${fromScript}", ""),
        ]
        .concat(),
        "1",
        "1",
    );
    let file = dir.path().join("draft.jmx");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("draft.toml");
    let exit = import(&file, &out);
    assert_eq!(exit.code, 2, "{}", exit.stderr);
    let draft = dir.path().join("draft.draft.toml");
    assert!(!out.exists(), "no plan that cannot run");
    let kept = std::fs::read_to_string(&draft).expect("the draft is written");
    assert!(kept.starts_with("# DRAFT: this import does not validate yet"));
    assert!(
        exit.stderr.contains(&format!("{}:", draft.display()))
            && exit.stderr.contains("undefined variable `fromScript`"),
        "{}",
        exit.stderr
    );
    // The line the error names is the line of the draft that holds it.
    let line: usize = exit
        .stderr
        .split(&format!("{}:", draft.display()))
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .expect("a line number");
    assert!(
        kept.lines()
            .nth(line - 1)
            .unwrap()
            .contains("${fromScript}")
    );

    // 20,000 nested controllers: a clear refusal, not a crash.
    let mut nested = get("deep", "/deep", "");
    for i in 0..20_000 {
        nested = el("GenericController", &format!("c{i}"), "", &nested);
    }
    let file = dir.path().join("deep.jmx");
    std::fs::write(&file, plan_of(&nested, "1", "1")).unwrap();
    let exit = import(&file, &dir.path().join("deep.toml"));
    assert_eq!(exit.code, 2, "{}", exit.stderr);
    assert!(exit.stderr.starts_with("error: "), "{}", exit.stderr);
    println!("{}", exit.stderr);
}

/// A thread group beside a bzm Arrivals thread group: imported as two
/// scenarios run at once, the users' and the arrival rate's, and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arrivals_thread_group_imports_as_a_scenario_with_its_rate() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let defaults = defaults_of(&bed.base_url());
    let users = el(
        "ThreadGroup",
        "Users",
        &format!(
            "{}{}<elementProp name=\"ThreadGroup.main_controller\" elementType=\"LoopController\">{}</elementProp>",
            sp("ThreadGroup.num_threads", "2"),
            sp("ThreadGroup.ramp_time", "0"),
            sp("LoopController.loops", "3")
        ),
        &get("users", "/users", ""),
    );
    // 20 arrivals a second, held 2 s, at most 4 at once.
    let arrivals = el(
        "com.blazemeter.jmeter.threads.arrivals.ArrivalsThreadGroup",
        "API",
        &format!(
            "{}{}{}{}",
            sp("TargetLevel", "20"),
            sp("RampUp", "0"),
            sp("Hold", "2"),
            sp("ConcurrencyLimit", "4")
        ),
        &get("api", "/api", ""),
    );
    let text = format!(
        "<?xml version=\"1.0\"?>\n<jmeterTestPlan version=\"1.2\"><hashTree>{}</hashTree></jmeterTestPlan>",
        el("TestPlan", "p", "", &[defaults, users, arrivals].concat())
    );
    let file = dir.path().join("arrivals.jmx");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("arrivals.toml");
    let exit = import(&file, &out);
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let plan = std::fs::read_to_string(&out).unwrap();
    println!("{plan}");
    assert!(
        plan.contains("stages = [{ from = 20, rate = 20, duration = \"2000ms\" }]\nmax_users = 4"),
        "{plan}"
    );
    let run_dir = dir.path().join("run");
    let exit = run_plan(&out, &run_dir).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    let stats = bed.stats();
    println!(
        "users {}, api {}",
        stats.served_path("/users"),
        stats.served_path("/api")
    );
    assert_eq!(stats.served_path("/users"), 6, "2 users x 3 loops");
    assert_eq!(stats.served_path("/api"), 40, "20 arrivals/s for 2 s");
    let s = summary(&run_dir);
    assert_eq!(s["load"]["model"], "mixed");
    assert_eq!(s["dropped_iterations"], 0);
}

/// A multipart POST with a file (HTTPFileArgs) and a repeated parameter:
/// imported as a `multipart` body and sent as JMeter sends it, checked
/// with Python's MIME parser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_post_with_a_file_imports_and_uploads_it() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = bed.base_url();
    let (host, port) = url.trim_start_matches("http://").split_once(':').unwrap();
    let file: Vec<u8> = (0..2000u32).map(|i| (i * 13 % 256) as u8).collect();
    std::fs::write(dir.path().join("scan.bin"), &file).unwrap();
    let arg = |n: &str, v: &str| {
        format!(
            "<elementProp name=\"{n}\" elementType=\"HTTPArgument\">{}{}<boolProp name=\"HTTPArgument.always_encode\">false</boolProp></elementProp>",
            sp("Argument.name", n),
            sp("Argument.value", v)
        )
    };
    let sampler = el(
        "HTTPSamplerProxy",
        "upload",
        &format!(
            "{}{}{}{}<boolProp name=\"HTTPSampler.DO_MULTIPART_POST\">true</boolProp>\
             <elementProp name=\"HTTPsampler.Files\" elementType=\"HTTPFileArgs\"><collectionProp name=\"HTTPFileArgs.files\">\
             <elementProp name=\"scan.bin\" elementType=\"HTTPFileArg\">{}{}{}</elementProp></collectionProp></elementProp>\
             <elementProp name=\"HTTPsampler.Arguments\" elementType=\"Arguments\"><collectionProp name=\"Arguments.arguments\">{}{}{}</collectionProp></elementProp>",
            sp("HTTPSampler.domain", host),
            sp("HTTPSampler.port", port),
            sp("HTTPSampler.path", "/upload"),
            sp("HTTPSampler.method", "POST"),
            sp("File.path", "scan.bin"),
            sp("File.paramname", "attachment"),
            sp("File.mimetype", "application/octet-stream"),
            arg("course", "7"),
            arg("tag", "a"),
            arg("tag", "b"),
        ),
        "",
    );
    let text = plan_of(&sampler, "1", "1");
    let jmx = dir.path().join("upload.jmx");
    std::fs::write(&jmx, text).unwrap();
    let out = dir.path().join("upload.toml");
    let exit = import(&jmx, &out);
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let plan = std::fs::read_to_string(&out).unwrap();
    println!("{plan}");
    assert!(
        plan.contains("{ name = \"attachment\", file = \"scan.bin\", content_type = \"application/octet-stream\" }"),
        "{plan}"
    );
    assert!(
        !plan.contains("sent more than once"),
        "a multipart body keeps repeats: {plan}"
    );
    let run_dir = dir.path().join("run");
    let exit = run_plan(&out, &run_dir).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    let uploads = bed.stats().uploads();
    assert_eq!(uploads.len(), 1);
    let parts = crate::upload::parse_multipart(&uploads[0].0, &uploads[0].1);
    println!("{parts}");
    let got: Vec<(String, String)> = parts
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("course".to_string(), "7".to_string()),
            ("tag".into(), "a".into()),
            ("tag".into(), "b".into()),
            ("attachment".into(), String::new())
        ]
    );
    assert_eq!(parts[3]["filename"], "scan.bin");
    assert_eq!(parts[3]["sha"], crate::upload::sha256(&file));
}

/// A Throughput Shaping Timer over a thread group of one sampler: imported
/// as an arrival rate of its requests per second, at most the group's
/// threads at once, and run: the target serves the schedule's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throughput_shaping_timer_imports_as_its_rate() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let defaults = defaults_of(&bed.base_url());
    let row = |a: &str, b: &str, d: &str| {
        format!(
            "<collectionProp name=\"r\">{}{}{}</collectionProp>",
            sp("1", a),
            sp("2", b),
            sp("3", d)
        )
    };
    // 15 requests a second for 2 s.
    let timer = el(
        "kg.apc.jmeter.timers.VariableThroughputTimer",
        "shape",
        &format!(
            "<collectionProp name=\"load_profile\">{}</collectionProp>",
            row("15", "15", "2")
        ),
        "",
    );
    let text = plan_of(
        &[defaults, timer, get("page", "/shaped", "")].concat(),
        "4",
        "-1",
    );
    let file = dir.path().join("shaped.jmx");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("shaped.toml");
    let exit = import(&file, &out);
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let plan = std::fs::read_to_string(&out).unwrap();
    println!("{plan}");
    let run_dir = dir.path().join("run");
    let exit = run_plan(&out, &run_dir).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    let served = bed.stats().served_path("/shaped");
    println!("served {served}");
    assert_eq!(served, 30, "15/s for 2 s");
    let s = summary(&run_dir);
    assert_eq!(s["load"]["model"], "open");
    assert_eq!(s["load"]["max_users"], 4, "the thread group's threads");
}

/// XPath extractors of the common shapes import as CSS extractions and
/// read what JMeter reads; an XPath of another shape is named and left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xpath_extractors_import_as_css_and_read_the_page() {
    let bed = testbed(Config::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let defaults = defaults_of(&bed.base_url());
    let xpath = |name: &str, query: &str| {
        el(
            "XPathExtractor",
            name,
            &format!(
                "{}{}{}",
                sp("XPathExtractor.refname", name),
                sp("XPathExtractor.xpathQuery", query),
                sp("XPathExtractor.default", "none")
            ),
            "",
        )
    };
    let text = plan_of(
        &[
            defaults,
            get(
                "page",
                "/",
                &[
                    xpath("title", "/html/body/h1/text()"),
                    xpath("second", "//li[2]"),
                ]
                .concat(),
            ),
            // The value goes back in a form, as JMeter would send it.
            el(
                "HTTPSamplerProxy",
                "use",
                &format!(
                    "{}{}<elementProp name=\"HTTPsampler.Arguments\" elementType=\"Arguments\"><collectionProp name=\"Arguments.arguments\">\
                     <elementProp name=\"t\" elementType=\"HTTPArgument\">{}{}</elementProp></collectionProp></elementProp>",
                    sp("HTTPSampler.path", "/upload"),
                    sp("HTTPSampler.method", "POST"),
                    sp("Argument.name", "t"),
                    sp("Argument.value", "${title}"),
                ),
                "",
            ),
        ]
        .concat(),
        "1",
        "1",
    );
    let file = dir.path().join("xpath.jmx");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("xpath.toml");
    let exit = import(&file, &out);
    assert_eq!(exit.code, 0, "{}", exit.stderr);
    let plan = std::fs::read_to_string(&out).unwrap();
    println!("{plan}");
    assert!(plan.contains("css = ':root > body > h1'"), "{plan}");
    assert!(
        plan.contains("XPath \"//li[2]\" is not a path of elements"),
        "{plan}"
    );
    let run_dir = dir.path().join("run");
    let exit = run_plan(&out, &run_dir).await;
    assert_eq!(exit.code, 0, "{}\n{}", exit.stdout, exit.stderr);
    let uploads = bed.stats().uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&uploads[0].1),
        "t=loadfleet+testbed",
        "the h1's text, read by the imported XPath"
    );
}
